"""Analytic compute accounting of composed models (docs/models.md#macs-per-stage).

Every model stage reports a list of :class:`BlockCost` for a given input frame rate; this
module adds them up into a model card. Convention (docs/models.md#cost-convention): Linear
``in*out`` MAC per frame, Conv1d ``C_in*C_out*k`` per output frame, S4D recurrence 8 MAC per complex
mode plus 1 per channel per step, biases not counted, BatchNorm folded into the preceding conv;
element-wise work (norms, gates, residual adds, pooling) is reported apart as ``other``.

Command line (any Hydra override of the training config composes)::

    python -m emg2qwerty_ssm.cost model=tc_s4_small              # table
    python -m emg2qwerty_ssm.cost model=tc_s4_small format=json  # one JSON object
    python -m emg2qwerty_ssm.cost model=tc_s4_small model/frontend=gru blocks=true
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig


@dataclass(frozen=True)
class BlockCost:
    """Streaming cost of one layer of a model, per second of 2 kHz input."""

    name: str  #: dotted layer name, e.g. "backbone.blocks.3.out_conv"
    kind: str  #: "linear", "conv", "ssm", "gru", "norm", "pool", ...
    params: int  #: trainable parameters (BatchNorm running stats excluded)
    input_rate_hz: float
    output_rate_hz: float
    weight_macs_per_s: float = 0.0  #: Linear / Conv weight MACs (what FlopCounterMode sees)
    recurrent_macs_per_s: float = 0.0  #: SSM / RNN state recurrences not in weight layers
    other_ops_per_s: float = 0.0  #: element-wise ops, not in the core number
    state_size: int = 0  #: floats of recurrent state per stream (complex counts 2)
    #: for event-based layers: MAC/s weighted by the measured activity (None = dense layer)
    event_macs_per_s: float | None = None

    @property
    def macs_per_s(self) -> float:
        """The core number of docs/models.md#cost-convention: weight layers plus recurrences."""
        return self.weight_macs_per_s + self.recurrent_macs_per_s


#: bytes per stored weight for the memory columns (int8 ignores per-tensor scales)
_BYTES_FP32 = 4
_BYTES_INT8 = 1

#: aten ops whose FLOPs are weight-layer MACs x 2 (bmm is S4D's FFT-mode kernel generation,
#: which streaming inference does not run; cross-check in docs/models.md#macs-per-stage)
WEIGHT_OPS = ("aten.addmm", "aten.mm", "aten.convolution")


@dataclass(frozen=True)
class _Totals:
    params: int
    weight: float
    recurrent: float
    other: float
    state: int
    event: float | None  # None when no block is event-based

    @classmethod
    def of(cls, blocks: Sequence[BlockCost]) -> _Totals:
        has_events = any(b.event_macs_per_s is not None for b in blocks)
        event = None
        if has_events:
            event = sum(
                b.macs_per_s if b.event_macs_per_s is None else b.event_macs_per_s for b in blocks
            )
        return cls(
            params=sum(b.params for b in blocks),
            weight=sum(b.weight_macs_per_s for b in blocks),
            recurrent=sum(b.recurrent_macs_per_s for b in blocks),
            other=sum(b.other_ops_per_s for b in blocks),
            state=sum(b.state_size for b in blocks),
            event=event,
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "params": self.params,
            "macs_per_second": self.weight + self.recurrent,
            "weight_macs_per_second": self.weight,
            "recurrent_macs_per_second": self.recurrent,
            "other_ops_per_second": self.other,
            "state_size": self.state,
            "state_bytes_fp32": self.state * _BYTES_FP32,
            "weight_bytes_fp32": self.params * _BYTES_FP32,
            "weight_bytes_int8": self.params * _BYTES_INT8,
        }
        if self.event is not None:
            out["event_macs_per_second"] = self.event
        return out


def stage_of(block: BlockCost) -> str:
    """The stage a block belongs to: the first component of its dotted name."""
    return block.name.split(".", 1)[0]


def summarize(
    blocks: Sequence[BlockCost],
    input_rate_hz: float,
    stride: int | None = None,
    lookahead_samples: int = 0,
    name: str | None = None,
) -> dict[str, Any]:
    """Aggregate per-layer costs into a model card (see :func:`model_card` for the fields).

    ``stride`` is input samples per output frame; when None it is taken from the last block's
    output rate. ``lookahead_samples`` are future input samples an output frame waits for
    beyond its own block (0 for causal, block-wise models).
    """
    if not blocks:
        raise ValueError("cannot summarize an empty list of BlockCost")
    for b in blocks:
        values = (b.weight_macs_per_s, b.recurrent_macs_per_s, b.other_ops_per_s)
        if not all(math.isfinite(v) and v >= 0 for v in values) or b.params < 0:
            raise ValueError(f"BlockCost {b.name!r} has a negative or non-finite entry: {b}")
    output_rate = input_rate_hz / stride if stride else blocks[-1].output_rate_hz
    frame_period = 1.0 / output_rate
    lookahead = lookahead_samples / input_rate_hz
    stages: list[dict[str, Any]] = []
    order: list[str] = []
    for b in blocks:
        if stage_of(b) not in order:
            order.append(stage_of(b))
    for stage in order:
        members = [b for b in blocks if stage_of(b) == stage]
        entry = {"name": stage, **_Totals.of(members).as_dict()}
        entry["input_rate_hz"] = members[0].input_rate_hz
        entry["output_rate_hz"] = members[-1].output_rate_hz
        stages.append(entry)
    card: dict[str, Any] = {"model": name} if name is not None else {}
    card.update(_Totals.of(blocks).as_dict())
    card.update(
        {
            "input_rate_hz": float(input_rate_hz),
            "output_rate_hz": output_rate,
            "frame_period_s": frame_period,
            "lookahead_s": lookahead,
            "latency_s": lookahead + frame_period,
            "stages": stages,
            "blocks": [{**asdict(b), "macs_per_s": b.macs_per_s} for b in blocks],
        }
    )
    return card


def model_card(
    model: torch.nn.Module, input_rate_hz: float | None = None, name: str | None = None
) -> dict[str, Any]:
    """The cost card of a composed model (``EMGModel`` or anything with the same cost API).

    Uses ``model.cost(input_rate_hz)`` (list of :class:`BlockCost`), ``model.stride`` (input
    samples per output frame) and, where present, ``model.input_rate_hz``, ``model.name`` and
    ``model.lookahead_samples``. Returned keys (rates per second of streaming input):

    - ``params``: trainable parameters of the module (cross-checked against the blocks' sum,
      which is reported per stage);
    - ``macs_per_second`` = ``weight_macs_per_second`` + ``recurrent_macs_per_second`` (the
      docs/models.md#cost-convention core number), ``other_ops_per_second`` (element-wise work, not
      in the core);
    - ``event_macs_per_second``: only for models with event-based blocks: the core number with
      those blocks' MACs weighted by their measured activity;
    - ``state_size`` (floats of recurrent state per stream), ``state_bytes_fp32``,
      ``weight_bytes_fp32``, ``weight_bytes_int8``;
    - ``output_rate_hz``, ``frame_period_s``, ``lookahead_s``, ``latency_s`` (algorithmic
      latency = look-ahead + one output frame period);
    - ``stages``: the same totals per stage (first component of the block names);
    - ``blocks``: every :class:`BlockCost` as a dict.
    """
    rate = input_rate_hz if input_rate_hz is not None else getattr(model, "input_rate_hz", None)
    if rate is None:
        raise ValueError(
            f"{type(model).__name__} has no input_rate_hz attribute; pass input_rate_hz"
        )
    blocks = list(model.cost(float(rate)))  # type: ignore[operator]
    stride = getattr(model, "stride", None)
    card = summarize(
        blocks,
        float(rate),
        stride=int(stride) if stride else None,
        lookahead_samples=int(getattr(model, "lookahead_samples", 0) or 0),
        name=name if name is not None else getattr(model, "name", None),
    )
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    card["params_from_blocks"] = card["params"]
    card["params"] = counted
    return card


def card_metrics(card: Mapping[str, Any], prefix: str = "cost/") -> dict[str, float]:
    """The card's scalar entries, flat, for experiment loggers (``cost/macs_per_second``...)."""
    return {
        prefix + k: float(v)
        for k, v in card.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def config_card(model_cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Build the model described by a ``model`` config node (untrained) and return its card."""
    from emg2qwerty_ssm.models import build_model

    model = build_model(model_cfg)
    name = model_cfg.get("name") if hasattr(model_cfg, "get") else None
    return model_card(model, input_rate_hz=model_cfg.get("input_rate_hz"), name=name)


def config_macs_per_second(cfg: DictConfig) -> float:
    """Core MAC/s of the model in a full composed config (``cfg.model``); Optuna's budget."""
    return float(config_card(cfg.model)["macs_per_second"])


def flop_counter_weight_macs(
    model: torch.nn.Module, inputs: torch.Tensor, input_rate_hz: float
) -> dict[str, float]:
    """Weight-layer MAC/s measured by ``torch.utils.flop_counter.FlopCounterMode``.

    Runs one forward pass on ``inputs`` (time-first, batch N) and returns MAC per second of
    input per stream for each op in :data:`WEIGHT_OPS` plus their ``total`` (FLOPs / 2). Use an
    input length that every stride divides (e.g. a multiple of 96·64 samples) so that no
    remainder frames are dropped.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    seconds = inputs.shape[0] / input_rate_hz
    batch = inputs.shape[1]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    flops = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    out = {op: flops.get(op, 0) / 2 / seconds / batch for op in WEIGHT_OPS}
    out["total"] = sum(out[op] for op in WEIGHT_OPS)
    return out


# ----------------------------------------------------------------------------- printing


def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f} {unit}"
    return f"{x:.4g}"


def format_card(card: Mapping[str, Any], blocks: bool = False) -> str:
    """Human-readable table of a card: one row per stage (or per block) and the total."""
    events = "event_macs_per_second" in card
    cols = ["params", "MAC/s", "weight MAC/s", "recur. MAC/s", "other ops/s", "state", "out Hz"]
    if events:
        cols.insert(2, "event MAC/s")

    def row(label: str, d: Mapping[str, Any]) -> list[str]:
        macs = d.get("macs_per_second", d.get("macs_per_s"))
        cells = [
            f"{d['params']:,}",
            _si(macs),
            _si(d.get("weight_macs_per_second", d.get("weight_macs_per_s"))),
            _si(d.get("recurrent_macs_per_second", d.get("recurrent_macs_per_s"))),
            _si(d.get("other_ops_per_second", d.get("other_ops_per_s"))),
            f"{d['state_size']:,}",
            f"{d['output_rate_hz']:.4g}",
        ]
        if events:
            ev = d.get("event_macs_per_second", d.get("event_macs_per_s"))
            cells.insert(2, _si(ev if ev is not None else macs))
        return [label, *cells]

    rows = [row(s["name"], s) for s in card["stages"]]
    if blocks:
        rows = [row(b["name"], b) for b in card["blocks"]]
    rows.append(row("total", card))
    header = ["stage" if not blocks else "block", *cols]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
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


# ----------------------------------------------------------------------------- CLI


def compose_config(overrides: Iterable[str], config_name: str | None = "config") -> DictConfig:
    """Compose the project's Hydra config (conf/) with command-line style overrides."""
    from hydra import compose, initialize_config_dir

    from emg2qwerty_ssm import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def compose_model_config(overrides: Sequence[str]) -> DictConfig:
    """The full training config; if that does not compose (a config group of another part of
    the project missing or broken), the ``model`` group alone with the model overrides."""
    from hydra.errors import HydraException

    try:
        return compose_config(overrides)
    except HydraException as e:
        model_overrides = [o for o in overrides if o.lstrip("+~").startswith("model")]
        dropped = sorted(set(overrides) - set(model_overrides))
        print(
            f"warning: the full config did not compose ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); composing the model group alone"
            + (f", ignoring {dropped}" if dropped else ""),
            file=sys.stderr,
        )
        if not any(o.startswith(("model=", "+model=")) for o in model_overrides):
            model_overrides.insert(0, "model=tc_s4_small")
        fixed = ["+" + o if o.startswith("model=") else o for o in model_overrides]
        return compose_config(fixed, config_name=None)


_OPTIONS = {"format": ("table", "json"), "blocks": ("false", "true")}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emg2qwerty_ssm.cost [format=table|json] [blocks=true] <hydra overrides>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(main.__doc__)
        return 0
    opts = {k: v[0] for k, v in _OPTIONS.items()}
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
    cfg = compose_model_config(overrides)
    if "model" not in cfg:
        print("error: the composed config has no 'model' node; pass model=<name>", file=sys.stderr)
        return 2
    card = config_card(cfg.model)
    if opts["format"] == "json":
        if opts["blocks"] == "false":
            card.pop("blocks")
        print(json.dumps(card))
    else:
        print(format_card(card, blocks=opts["blocks"] == "true"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
