"""Print a composed model's layer table: parameters, frame rates and MAC/s per layer.

    python -m emg2qwerty_ssm.models.summary model=tc_s4_small [model/frontend=identity ...]

Only the ``model`` config group is composed (on a minimal primary config built here), so the
command does not depend on the trainer's conf/config.yaml.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from emg2qwerty_ssm import CONFIG_DIR

_PRIMARY = "_model_summary_primary"


def compose_model_config(
    overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> DictConfig:
    """Compose the ``model`` group with Hydra overrides and return the ``model`` node.

    ``overrides`` are ordinary Hydra overrides, e.g. ``["model=tc_s4_small",
    "model/frontend=identity", "model.backbone.d_model=64"]``; ``model=...`` is required.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra

    if not any(o.split("=", 1)[0].lstrip("+") == "model" for o in overrides):
        raise ValueError("choose a model: pass model=<name> (a file of conf/model/)")
    ConfigStore.instance().store(name=_PRIMARY, node={"defaults": [{"model": "???"}, "_self_"]})
    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / "model").is_dir():
        raise FileNotFoundError(f"no model config group at {config_dir / 'model'}")
    was_initialized = GlobalHydra.instance().is_initialized()
    if was_initialized:  # e.g. inside a Hydra app: compose in a fresh context, then restore
        saved = GlobalHydra.instance().hydra
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name=_PRIMARY, overrides=list(overrides))
    finally:
        if was_initialized:
            GlobalHydra.instance().initialize(saved)  # type: ignore[arg-type]
    return cfg.model


def _fmt(x: float) -> str:
    return f"{x:,.3f}".rstrip("0").rstrip(".") if x else "0"


def layer_table(model) -> str:  # model: EMGModel
    """The per-layer table and the totals, as text."""
    costs = model.cost()
    rows = [("layer", "kind", "params", "in Hz", "out Hz", "MAC/s", "other ops/s", "state")]
    for c in costs:
        rows.append(
            (
                c.name,
                c.kind,
                f"{c.params:,}",
                _fmt(c.input_rate_hz),
                _fmt(c.output_rate_hz),
                _fmt(c.macs_per_s),
                _fmt(c.other_ops_per_s),
                f"{c.state_size:,}",
            )
        )
    total_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weight = sum(c.weight_macs_per_s for c in costs)
    recurrent = sum(c.recurrent_macs_per_s for c in costs)
    rows.append(
        (
            "total",
            "",
            f"{total_params:,}",
            _fmt(model.input_rate_hz),
            _fmt(model.input_rate_hz / model.stride),
            _fmt(weight + recurrent),
            _fmt(sum(c.other_ops_per_s for c in costs)),
            f"{sum(c.state_size for c in costs):,}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [v.rjust(w) for v, w in zip(r[2:], widths[2:], strict=False)]
        lines.append("  ".join(cells))
        if k in (0, len(rows) - 2):
            lines.append("-" * len(lines[-1]))
    lines.append(
        f"{model.name}: stride {model.stride} input frames, weight {_fmt(weight)} + "
        f"SSM/RNN recurrences {_fmt(recurrent)} MAC/s"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from emg2qwerty_ssm.models.model import build_model

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    model = build_model(compose_model_config(args))
    print(layer_table(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
