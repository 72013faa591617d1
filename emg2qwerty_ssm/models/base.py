"""The contract every model stage keeps: rates, context, streaming state and cost.

A model is a chain of :class:`StreamingModule` stages. Each stage maps a time-first sequence
``(T, N, C_in)`` at some frame rate to ``(T // stride, N, C_out)`` at ``rate / stride``, is
causal, and can run chunk by chunk with explicit state so that concatenated streaming outputs
equal the offline output (the brief's "streaming is first-class"). Because every stage states
its own stride, left context and cost, emission lengths, streaming and compute accounting need
no per-model special cases.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emg2qwerty_ssm.models.cost import BlockCost

State = Any  # a tensor, tuple or dict of tensors, or None; opaque to callers


class StreamingModule(nn.Module):
    """Base class of model stages.

    The defaults describe a *block-local* stage: its output frame ``k`` depends only on input
    frames ``[k*stride, (k+1)*stride)`` (kernel = stride, or stride 1 and pointwise). Such a
    stage streams by buffering the input remainder that does not fill a whole block; the
    default :meth:`forward_stream` does exactly that. Stages with recurrent state (S4D, GRU)
    or longer receptive fields (TDS convolutions) override ``left_context``,
    :meth:`initial_state` and :meth:`forward_stream`.
    """

    #: input frames consumed per output frame
    stride: int = 1

    @property
    def left_context(self) -> int | None:
        """Input frames before the current block that influence its output.

        0 for block-local stages; ``None`` where the dependence is unbounded and carried by a
        recurrent state (S4D, GRU).
        """
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, N, C_in) -> (T // stride, N, C_out)
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Streaming state before the first chunk (zero recurrent state, empty buffers)."""
        return None

    def forward_stream(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Consume a chunk ``(t, N, C_in)`` of any length; return new output frames and state.

        Default for block-local stages: prepend the buffered remainder, run :meth:`forward` on
        the whole blocks and keep the rest (fewer than ``stride`` frames) as the new state.
        """
        buffered = x if state is None else torch.cat([state, x], dim=0)
        usable = buffered.shape[0] // self.stride * self.stride
        return self.forward(buffered[:usable]), buffered[usable:]

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        """Streaming compute of this stage fed at ``input_rate_hz`` (cost convention of
        docs/models.md)."""
        raise NotImplementedError(f"{type(self).__name__} does not report its cost")
