"""Analytic compute accounting of composed models (SPEC.md §6).

Every model stage reports a list of :class:`BlockCost` for a given input frame rate; this
module adds them up into a model card. Convention (SPEC.md §6.2): Linear ``in*out`` MAC per
frame, Conv1d ``C_in*C_out*k`` per output frame, S4D recurrence 8 MAC per complex mode plus 1
per channel per step, biases not counted, BatchNorm folded into the preceding conv;
element-wise work (norms, gates, residual adds, pooling) is reported apart as ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        """The core number of SPEC.md §6.2: weight layers plus recurrences."""
        return self.weight_macs_per_s + self.recurrent_macs_per_s
