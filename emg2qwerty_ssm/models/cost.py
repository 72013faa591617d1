"""Per-layer streaming cost of model stages and its aggregation into a model card (a leaf).

Every model stage reports a list of :class:`BlockCost` for a given input frame rate
(``StreamingModule.cost``); :func:`model_card` adds them up. Convention
(docs/models.md#cost-convention): Linear ``in*out`` MAC per frame, Conv1d ``C_in*C_out*k`` per
output frame, S4D recurrence 8 MAC per complex mode plus 1 per channel per step, biases not
counted, BatchNorm folded into the preceding (or following) weight layer; element-wise work
(norms, gates, residual adds, pooling) is reported apart as ``other``.

The helpers :func:`trainable_params`, :func:`linear_cost`, :func:`conv_cost`, :func:`norm_cost`
and :func:`pool_cost` write that convention once, so a stage's ``cost()`` lists its layers.
This module imports nothing of the project: the Hydra composition and the command line are in
:mod:`emg2qwerty_ssm.models.card`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


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
    counted = trainable_params(model)
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


def flop_counter_weight_macs(
    model: torch.nn.Module, inputs: torch.Tensor, input_rate_hz: float
) -> dict[str, float]:
    """Weight-layer MAC/s measured by ``torch.utils.flop_counter.FlopCounterMode``.

    Runs one forward pass on ``inputs`` (time-first, batch N) and returns MAC per second of
    input per stream for each op in :data:`WEIGHT_OPS` plus their ``total`` (FLOPs / 2). Use an
    input length that every stride divides (e.g. a multiple of 96·64 samples) so that no
    remainder frames are dropped.
    """
    from torch.utils.flop_counter import FlopCounterMode

    seconds = inputs.shape[0] / input_rate_hz
    batch = inputs.shape[1]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    flops = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    out = {op: flops.get(op, 0) / 2 / seconds / batch for op in WEIGHT_OPS}
    out["total"] = sum(out[op] for op in WEIGHT_OPS)
    return out


# ----------------------------------------------------------------------------- per-layer helpers


def trainable_params(module: nn.Module | None) -> int:
    """Trainable parameters of ``module`` (BatchNorm running statistics are buffers: excluded)."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def linear_cost(
    name: str,
    linear: nn.Linear,
    rate_hz: float,
    *,
    copies: int = 1,
    output_rate_hz: float | None = None,
    **extra: Any,
) -> BlockCost:
    """A Linear run ``copies`` times per frame at ``rate_hz``: ``copies*in*out`` MAC per frame.

    ``output_rate_hz`` (default ``rate_hz``) is for a Linear applied once per output block;
    the MACs are counted at the output rate then. ``extra`` are further :class:`BlockCost`
    fields (``other_ops_per_s``, ``event_macs_per_s``, ...).
    """
    out_rate = rate_hz if output_rate_hz is None else output_rate_hz
    macs = copies * linear.in_features * linear.out_features * out_rate
    return BlockCost(
        name,
        "linear",
        trainable_params(linear),
        rate_hz,
        out_rate,
        weight_macs_per_s=macs,
        **extra,
    )


def conv_cost(name: str, conv: nn.Conv1d, rate_hz: float, **extra: Any) -> BlockCost:
    """A causal strided Conv1d: ``C_in*C_out*k`` MAC per output frame (groups divide it).

    The default ``state_size`` is the ``stride - 1`` input frames a streaming block buffers.
    """
    stride, k = conv.stride[0], conv.kernel_size[0]
    out_rate = rate_hz / stride
    macs = conv.in_channels * conv.out_channels // conv.groups * k * out_rate
    extra.setdefault("state_size", (stride - 1) * conv.in_channels)
    return BlockCost(
        name, "conv", trainable_params(conv), rate_hz, out_rate, weight_macs_per_s=macs, **extra
    )


def norm_cost(
    name: str, norm: nn.Module, rate_hz: float, features: int, *, copies: int = 1
) -> BlockCost | None:
    """A normalization layer, or None when it has no parameters (nothing to report).

    BatchNorm (and any per-channel affine next to a weight layer) folds into that layer in
    inference: parameters, no ops. A LayerNorm-like norm costs 2 ops per element
    (``features * copies`` elements per frame).
    """
    params = trainable_params(norm)
    if not params:
        return None
    folds = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in norm.modules())
    ops = 0.0 if folds else 2 * features * copies * rate_hz
    return BlockCost(name, "norm", params, rate_hz, rate_hz, other_ops_per_s=ops)


def pool_cost(
    name: str, rate_hz: float, factor: int, features: int, *, ops_per_s: float | None = None
) -> BlockCost:
    """Mean pooling of ``factor`` frames of ``features``: one add per input element, and
    ``factor - 1`` frames buffered while streaming."""
    return BlockCost(
        name,
        "pool",
        0,
        rate_hz,
        rate_hz / factor,
        other_ops_per_s=features * rate_hz if ops_per_s is None else ops_per_s,
        state_size=(factor - 1) * features,
    )
