"""The model-card command: compose a model from conf/, print its parameters, MAC/s, state,
memory and latency per stage or per layer.

One implementation behind two invocations (any Hydra override of the training config
composes)::

    python -m emg2qwerty_ssm.cost model=tc_s4_small                 # per-stage table
    python -m emg2qwerty_ssm.cost model=tc_s4_small format=json     # one JSON object
    python -m emg2qwerty_ssm.cost model=tc_s4_small model/frontend=gru blocks=true
    python -m emg2qwerty_ssm.models.summary model=s4_large          # = blocks=true

The numbers come from :func:`emg2qwerty_ssm.models.cost.model_card` (the leaf); this module
adds Hydra composition and text formatting.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emg2qwerty_ssm import CONFIG_DIR
from emg2qwerty_ssm.models.cost import model_card

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from emg2qwerty_ssm.models.model import EMGModel

_PRIMARY = "_model_summary_primary"

# ----------------------------------------------------------------------------- composition


def compose_config(overrides: Iterable[str], config_name: str | None = "config") -> DictConfig:
    """Compose the project's Hydra config (conf/) with command-line style overrides.

    ``config_name=None`` composes the config groups named by ``+group=...`` overrides alone.
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def compose_model_config(
    overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> DictConfig:
    """Compose the ``model`` group with Hydra overrides and return the ``model`` node.

    ``overrides`` are ordinary Hydra overrides, e.g. ``["model=tc_s4_small",
    "model/frontend=identity", "model.backbone.d_model=64"]``; ``model=...`` is required. Only
    the ``model`` group is composed (on a minimal primary config built here), so this does not
    depend on the trainer's conf/config.yaml.
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


def compose_card_model(overrides: Sequence[str]) -> DictConfig:
    """The ``model`` node of the full training config; if that does not compose (a config
    group of another part of the project missing or broken), of the ``model`` group alone."""
    from hydra.errors import HydraException

    try:
        cfg = compose_config(overrides)
    except HydraException as e:
        model_overrides = [o for o in overrides if o.lstrip("+~").startswith("model")]
        dropped = sorted(set(overrides) - set(model_overrides))
        print(
            f"warning: the full config did not compose ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); composing the model group alone"
            + (f", ignoring {dropped}" if dropped else ""),
            file=sys.stderr,
        )
        if not any(o.lstrip("+").startswith("model=") for o in model_overrides):
            model_overrides.insert(0, "model=tc_s4_small")
        return compose_model_config(model_overrides)
    if "model" not in cfg:
        raise ValueError("the composed config has no 'model' node; pass model=<name>")
    return cfg.model


def config_card(model_cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Build the model described by a ``model`` config node (untrained) and return its card."""
    from emg2qwerty_ssm.models.model import build_model

    model = build_model(model_cfg)
    name = model_cfg.get("name") if hasattr(model_cfg, "get") else None
    return model_card(model, input_rate_hz=model_cfg.get("input_rate_hz"), name=name)


def config_macs_per_second(cfg: DictConfig) -> float:
    """Core MAC/s of the model in a full composed config (``cfg.model``); Optuna's budget."""
    return float(config_card(cfg.model)["macs_per_second"])


# ----------------------------------------------------------------------------- printing


def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f} {unit}"
    return f"{x:.4g}"


def _exact(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.3f}".rstrip("0").rstrip(".") if x else "0"


def _pick(d: Mapping[str, Any], key: str) -> Any:
    """A total from a card/stage (``*_per_second``) or a block (``*_per_s``)."""
    return d.get(f"{key}_per_second", d.get(f"{key}_per_s"))


def format_card(card: Mapping[str, Any], blocks: bool = False) -> str:
    """Human-readable table of a card and its totals.

    One row per stage with SI-rounded rates, or (``blocks=True``) one row per layer with its
    kind, input rate and exact rates.
    """
    events = "event_macs_per_second" in card
    num = _exact if blocks else _si
    cols = ["params", "MAC/s", "weight MAC/s", "recur. MAC/s", "other ops/s", "state", "out Hz"]
    if events:
        cols.insert(2, "event MAC/s")
    if blocks:
        cols = ["kind", *cols[:-1], "in Hz", "out Hz"]

    def row(label: str, d: Mapping[str, Any]) -> list[str]:
        macs = _pick(d, "macs")
        cells = [f"{d['params']:,}", num(macs), num(_pick(d, "weight_macs"))]
        cells += [num(_pick(d, "recurrent_macs")), num(_pick(d, "other_ops"))]
        cells += [f"{d['state_size']:,}", f"{d['output_rate_hz']:.4g}"]
        if events:
            ev = _pick(d, "event_macs")
            cells.insert(2, num(ev if ev is not None else macs))
        if blocks:
            cells[-1:] = [_exact(d["input_rate_hz"]), _exact(d["output_rate_hz"])]
            cells.insert(0, d.get("kind", ""))
        return [label, *cells]

    rows = [row(b["name"], b) for b in card["blocks"]] if blocks else []
    rows = rows or [row(s["name"], s) for s in card["stages"]]
    rows.append(row("total", card))
    header = ["block" if blocks else "stage", *cols]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = 2 if blocks else 1  # name (and kind) left-aligned, numbers right-aligned

    def fmt(r: list[str]) -> str:
        cells = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells)

    rule = "-" * len(fmt(header))
    lines = [f"model: {card.get('model')}  (input {card['input_rate_hz']:g} Hz)", fmt(header), rule]
    lines += [fmt(r) for r in rows[:-1]] + [rule, fmt(rows[-1]), ""]
    lines.append(f"core MAC/s (weight + recurrent): {card['macs_per_second']:,.1f}")
    if events:
        lines.append(f"activity-weighted MAC/s:        {card['event_macs_per_second']:,.1f}")
    lines.append(
        f"weight memory: {card['weight_bytes_fp32'] / 1024:,.1f} KiB fp32, "
        f"{card['weight_bytes_int8'] / 1024:,.1f} KiB int8; recurrent state "
        f"{card['state_size']:,} floats ({card['state_bytes_fp32'] / 1024:,.2f} KiB fp32)"
    )
    lines.append(
        f"output rate {card['output_rate_hz']:.4g} Hz; algorithmic latency "
        f"{card['latency_s'] * 1e3:.1f} ms (look-ahead {card['lookahead_s'] * 1e3:.1f} ms "
        f"+ frame period {card['frame_period_s'] * 1e3:.1f} ms)"
    )
    return "\n".join(lines)


def layer_table(model: EMGModel) -> str:
    """The per-layer table of a built model (``format_card(model_card(model), blocks=True)``)."""
    return format_card(model_card(model), blocks=True)


# ----------------------------------------------------------------------------- CLI

_OPTIONS = {"format": ("table", "json"), "blocks": ("false", "true")}


def main(argv: Sequence[str] | None = None, blocks: bool = False) -> int:
    """``python -m emg2qwerty_ssm.cost [format=table|json] [blocks=true] <hydra overrides>``.

    ``python -m emg2qwerty_ssm.models.summary <overrides>`` is the same with ``blocks=true``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(main.__doc__)
        return 0
    opts = {"format": "table", "blocks": "true" if blocks else "false"}
    overrides = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in _OPTIONS:
            if value not in _OPTIONS[key]:
                print(f"error: {key}={value!r}; expected one of {_OPTIONS[key]}", file=sys.stderr)
                return 2
            opts[key] = value
        else:
            overrides.append(arg)
    try:
        model_cfg = compose_card_model(overrides)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    card = config_card(model_cfg)
    if opts["format"] == "json":
        if opts["blocks"] == "false":
            card.pop("blocks")
        print(json.dumps(card))
    else:
        print(format_card(card, blocks=opts["blocks"] == "true"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
