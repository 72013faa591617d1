"""Recurrent front-ends: a GRU and an event-based GRU (EGRU), reduced to the backbone rate.

Both follow the seed's ``GRULayer`` (docs/models.md#gru-front-end): optional own mean pooling of the
500 Hz encoder features, one unidirectional recurrent layer of ``d_hidden`` units, the hidden
sequence cut into blocks of ``block_length / mean_pooling`` steps and each block reduced by
``mean`` or ``last``, then tied dropout, ``Linear(d_hidden, out_features)``, BatchNorm1d
(momentum 0.05) over batch x time and ReLU (the seed's ``sparse_relu_10`` forward).

The EGRU (Subramoney et al., ICLR 2023) runs its recurrence with :class:`EGRUScan`
(:mod:`emg2qwerty_ssm.models.egru_scan`), plain PyTorch on CPU and GPU, at the price of a
Python loop over time steps (see docs/models-extra.md for its speed).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emg2qwerty_ssm.models.activity import activity_rates, reset_activity
from emg2qwerty_ssm.models.base import State, StreamingModule
from emg2qwerty_ssm.models.cost import (
    BlockCost,
    linear_cost,
    norm_cost,
    pool_cost,
    trainable_params,
)
from emg2qwerty_ssm.models.egru_scan import EGRUScan, SpikeFunction, gru_cell
from emg2qwerty_ssm.models.s4d import TiedDropout

# EGRUScan, SpikeFunction and gru_cell: re-exported from their own module (egru_scan.py);
# reset_activity and activity_rates: from models/activity.py (every event-based stage)
__all__ = [
    "EGRUFrontend",
    "EGRUScan",
    "GRUFrontend",
    "SpikeFunction",
    "activity_rates",
    "gru_cell",
    "reset_activity",
]

_REDUCTIONS = ("mean", "last")
_NORMS = ("batchnorm", "layernorm", "none")


class _BlockReducedRecurrent(StreamingModule):
    """Shared machinery of the GRU and EGRU front-ends.

    Subclasses provide the recurrence :meth:`_scan` over pooled steps and its zero state; this
    class does the pooling, the block reduction, the optional detach between blocks, the
    output head, streaming and the cost of everything but the recurrent layer.

    Shapes: input ``(T, N, in_features)`` at the encoder rate; output
    ``(T // block_length, N, out_features)``.
    """

    kind = "rnn"

    def __init__(
        self,
        in_features: int,
        out_features: int | None = 150,
        d_hidden: int = 64,
        block_length: int = 24,
        mean_pooling: int = 1,
        reduction: str = "mean",
        detach_between_blocks: bool = False,
        dropout: float = 0.0,
        norm: str = "batchnorm",
        norm_momentum: float = 0.05,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for field, value in (
            ("in_features", in_features),
            ("d_hidden", d_hidden),
            ("block_length", block_length),
            ("mean_pooling", mean_pooling),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: {field} must be a positive int, got {value!r}")
        if block_length % mean_pooling != 0:
            raise ValueError(
                f"{name}: block_length ({block_length}) must be a multiple of "
                f"mean_pooling ({mean_pooling})"
            )
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        if norm not in _NORMS:
            raise ValueError(f"{name}: norm must be one of {_NORMS}, got {norm!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout!r}")
        if out_features is not None and (not isinstance(out_features, int) or out_features < 0):
            raise ValueError(
                f"{name}: out_features must be a positive int or null, got {out_features!r}"
            )

        self.in_features = in_features
        self.d_hidden = d_hidden
        self.block_length = block_length
        self.mean_pooling = mean_pooling
        self.block_steps = block_length // mean_pooling  #: recurrent steps per output frame
        self.reduction = reduction
        self.detach_between_blocks = detach_between_blocks
        self.drop = TiedDropout(dropout)
        self.stride = block_length

        # out_features null/0 = the seed's include_linear_layer 0: no Linear, d_hidden out.
        if out_features:
            self.linear: nn.Module = nn.Linear(d_hidden, out_features)
            self.out_features = out_features
        else:
            self.linear = nn.Identity()
            self.out_features = d_hidden
        if norm == "batchnorm":
            self.norm: nn.Module = nn.BatchNorm1d(self.out_features, momentum=norm_momentum)
        elif norm == "layernorm":
            self.norm = nn.LayerNorm(self.out_features)
        else:
            self.norm = nn.Identity()

    # -- to be provided by subclasses -------------------------------------------------------
    def _scan(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Run the recurrence over pooled steps ``(t, N, in)`` -> ``(t, N, d_hidden)``."""
        raise NotImplementedError

    def _zero_state(self, batch_size: int, device: torch.device | None, dtype: torch.dtype) -> Any:
        raise NotImplementedError

    @staticmethod
    def _detach_state(state: Any) -> Any:
        if isinstance(state, tuple):
            return tuple(s.detach() for s in state)
        return state.detach()

    def _recurrent_params(self) -> int:
        raise NotImplementedError

    def _before_run(self) -> None:
        """Hook run once per forward / stream chunk, before the recurrence."""

    def _recurrent_cost_extra(self, step_rate_hz: float) -> dict[str, Any]:
        return {}

    # -- the pipeline ------------------------------------------------------------------------
    @property
    def left_context(self) -> int | None:
        return None  # unbounded, carried by the recurrent state

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"{type(self).__name__}: expected input (T, N, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, C) -> (T // mean_pooling, N, C); the remainder is dropped."""
        if self.mean_pooling == 1:
            return x
        t = x.shape[0] // self.mean_pooling
        return x[: t * self.mean_pooling].reshape(t, self.mean_pooling, *x.shape[1:]).mean(1)

    def _run(self, x: torch.Tensor, state: Any, phase: int) -> tuple[torch.Tensor, Any]:
        """Recurrence over pooled steps, ``phase`` steps into the current block.

        With ``detach_between_blocks`` the state is detached at every block boundary (this
        truncates back-propagation through time; the forward values do not change).
        """
        if not (self.detach_between_blocks and torch.is_grad_enabled()) or x.shape[0] == 0:
            return self._scan(x, state)
        outs = []
        start = 0
        end = self.block_steps - phase
        while start < x.shape[0]:
            stop = min(end, x.shape[0])
            out, state = self._scan(x[start:stop], state)
            outs.append(out)
            if stop == end:
                state = self._detach_state(state)
            start, end = stop, end + self.block_steps
        return torch.cat(outs, dim=0), state

    def _reduce(self, h: torch.Tensor) -> torch.Tensor:
        """(B * block_steps, N, H) -> (B, N, H)."""
        blocks = h.reshape(h.shape[0] // self.block_steps, self.block_steps, *h.shape[1:])
        return blocks.mean(1) if self.reduction == "mean" else blocks[:, -1]

    def _head(self, z: torch.Tensor) -> torch.Tensor:
        """Tied dropout -> Linear -> norm over batch x time -> ReLU; (B, N, H) -> (B, N, out)."""
        z = self.linear(self.drop(z))
        if isinstance(self.norm, nn.BatchNorm1d):
            z = self.norm(z.reshape(-1, z.shape[-1])).reshape(z.shape)
        else:
            z = self.norm(z)
        return F.relu(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, in_features) -> (T // block_length, N, out_features)."""
        self._check(x)
        n_blocks = x.shape[0] // self.block_length
        # Steps of a trailing partial block would be cut after the recurrence anyway.
        pooled = self._pool(x[: n_blocks * self.block_length])
        state = self._zero_state(x.shape[1], x.device, x.dtype)
        self._before_run()
        h, _ = self._run(pooled, state, phase=0)
        return self._head(self._reduce(h))

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = next(self.parameters()).dtype
        return {
            "rnn": self._zero_state(batch_size, device, dtype),
            "pool_buffer": torch.zeros(0, batch_size, self.in_features, device=device, dtype=dtype),
            "block_buffer": torch.zeros(0, batch_size, self.d_hidden, device=device, dtype=dtype),
        }

    def forward_stream(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Consume a chunk ``(t, N, in_features)``; emit the blocks it completes.

        The state carries the recurrent state, the inputs that do not fill a pooling group yet
        and the hidden outputs of the unfinished block, so any chunking gives the offline
        output (in eval mode).
        """
        self._check(x)
        if state is None:
            state = self.initial_state(x.shape[1], x.device)
        buffered = torch.cat([state["pool_buffer"], x], dim=0)
        usable = buffered.shape[0] // self.mean_pooling * self.mean_pooling
        pooled = self._pool(buffered[:usable])
        pending = state["block_buffer"]
        self._before_run()
        h, rnn_state = self._run(pooled, state["rnn"], phase=pending.shape[0])
        h = torch.cat([pending, h], dim=0)
        done = h.shape[0] // self.block_steps * self.block_steps
        if done:
            out = self._head(self._reduce(h[:done]))
        else:
            out = x.new_zeros(0, x.shape[1], self.out_features)
        new_state = {"rnn": rnn_state, "pool_buffer": buffered[usable:], "block_buffer": h[done:]}
        return out, new_state

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        step_rate = input_rate_hz / self.mean_pooling
        out_rate = input_rate_hz / self.block_length
        h, c_in = self.d_hidden, self.in_features
        costs = []
        if self.mean_pooling > 1:
            costs.append(pool_cost("pool", input_rate_hz, self.mean_pooling, c_in))
        state = self._state_floats()
        costs.append(
            BlockCost(
                "rnn",
                self.kind,
                self._recurrent_params(),
                step_rate,
                step_rate,
                # input and recurrent matrices of the three gates, counted as weight layers
                weight_macs_per_s=3 * (c_in * h + h * h) * step_rate,
                # gate products and the state update (~6 per unit), plus the block mean
                other_ops_per_s=(6 + (self.reduction == "mean")) * h * step_rate,
                state_size=state,
                **self._recurrent_cost_extra(step_rate),
            )
        )
        if isinstance(self.linear, nn.Linear):  # applied once per output block
            costs.append(linear_cost("linear", self.linear, step_rate, output_rate_hz=out_rate))
        # BatchNorm folds into the Linear in inference; LayerNorm costs 2 per element.
        norm = norm_cost("norm", self.norm, out_rate, self.out_features)
        return costs + ([norm] if norm else [])

    def _state_floats(self) -> int:
        """Floats per stream carried between steps: recurrent state plus the block sum."""
        return self.d_hidden * (1 + (self.reduction == "mean"))


class GRUFrontend(_BlockReducedRecurrent):
    """GRU front-end; the recurrence is ``torch.nn.GRU`` (cuDNN on GPU, a C++ loop on CPU).

    Input ``(T, N, in_features)`` at the encoder rate, output
    ``(T // block_length, N, out_features)`` at ``rate / block_length``.
    """

    kind = "gru"

    def __init__(self, in_features: int, **kwargs: Any) -> None:
        super().__init__(in_features, **kwargs)
        self.rnn = nn.GRU(in_features, self.d_hidden, num_layers=1, bidirectional=False)

    def _scan(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] == 0:
            return x.new_zeros(0, x.shape[1], self.d_hidden), state
        return self.rnn(x, state)

    def _zero_state(
        self, batch_size: int, device: torch.device | None, dtype: torch.dtype
    ) -> torch.Tensor:
        return torch.zeros(1, batch_size, self.d_hidden, device=device, dtype=dtype)

    def _recurrent_params(self) -> int:
        return trainable_params(self.rnn)


class EGRUFrontend(_BlockReducedRecurrent):
    """Event-based GRU front-end (Subramoney et al., ICLR 2023), plain PyTorch.

    Per step: the GRU update ``c`` reads the previous *sparse output* ``y_{t-1}``; a unit emits
    ``y = c * H(c - theta)`` where its state crosses its learnable threshold ``theta``, and the
    state is then reduced by ``theta`` there. The Heaviside step uses the pseudo-derivative
    ``gamma * max(0, 1 - |c - theta| / epsilon)``. Zoneout (probability ``zoneout``) keeps the
    previous state per unit and step in training and blends ``p * old + (1 - p) * new`` in
    eval. Thresholds are clamped to [0, 1] before each forward, as in EvNN.

    ``activity_rate`` is the fraction of (unit, step) pairs that fired, accumulated over
    forwards since :meth:`reset_activity`; ``last_activity_rate`` is the last forward's.
    """

    kind = "egru"

    def __init__(
        self,
        in_features: int,
        zoneout: float = 0.1,
        dampening_factor: float = 0.7,
        pseudo_derivative_support: float = 1.0,
        threshold_mean: float = 0.3,
        weight_init_gain: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_features, **kwargs)
        if not 0.0 <= zoneout < 1.0:
            raise ValueError(f"EGRUFrontend: zoneout must be in [0, 1), got {zoneout!r}")
        if not 0.0 < threshold_mean < 1.0:
            raise ValueError(
                f"EGRUFrontend: threshold_mean must be in (0, 1), got {threshold_mean!r}"
            )
        if pseudo_derivative_support <= 0:
            raise ValueError(
                "EGRUFrontend: pseudo_derivative_support must be > 0, "
                f"got {pseudo_derivative_support!r}"
            )
        h = self.d_hidden
        self.zoneout = zoneout
        self.dampening_factor = dampening_factor
        self.pseudo_derivative_support = pseudo_derivative_support
        # Same names and layout as torch.nn.GRU's layer 0, so GRU weights load directly.
        self.weight_ih = nn.Parameter(torch.empty(3 * h, in_features))
        self.weight_hh = nn.Parameter(torch.empty(3 * h, h))
        self.bias_ih = nn.Parameter(torch.zeros(3 * h))
        self.bias_hh = nn.Parameter(torch.zeros(3 * h))
        nn.init.xavier_normal_(self.weight_ih, gain=weight_init_gain)
        nn.init.xavier_normal_(self.weight_hh, gain=weight_init_gain)
        # EvNN's initialisation: Beta(a, 3) with mean threshold_mean, inside (0, 1).
        beta = 3.0
        alpha = beta * threshold_mean / (1.0 - threshold_mean)
        self.threshold = nn.Parameter(torch.distributions.Beta(alpha, beta).sample((h,)))
        self.reset_activity()

    def reset_activity(self) -> None:
        """Forget the accumulated activity statistics."""
        self._events = 0.0
        self._unit_steps = 0
        self.last_activity_rate: float | None = None

    @property
    def activity_rate(self) -> float | None:
        """Fraction of units firing per step since the last reset (None before any step)."""
        return self._events / self._unit_steps if self._unit_steps else None

    def _before_run(self) -> None:
        # EvNN keeps thresholds in [0, 1] by clamping the data before each forward. Only when
        # needed: an in-place write would invalidate a graph that still uses them.
        with torch.no_grad():
            if bool(((self.threshold < 0) | (self.threshold > 1)).any()):
                self.threshold.clamp_(0.0, 1.0)

    def _zero_state(
        self, batch_size: int, device: torch.device | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch_size, self.d_hidden, device=device, dtype=dtype)
        return zeros, zeros.clone()  # (state c, sparse output y)

    def _scan(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        c, y = state
        steps = x.shape[0]
        if steps == 0:
            return x.new_zeros(0, x.shape[1], self.d_hidden), state
        # The recurrence runs in the parameters' precision even under autocast (bf16-mixed):
        # its buffers are written with out= and thresholds compare against the raw state.
        dtype = self.weight_hh.dtype
        x, c, y = x.to(dtype), c.to(dtype), y.to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            # One matmul for the input projections of all steps; only the recurrence loops.
            gx_all = F.linear(x, self.weight_ih, self.bias_ih)
            p = self.zoneout
            keep = None
            if p > 0 and self.training:
                keep = torch.empty_like(gx_all[..., : self.d_hidden]).bernoulli_(1 - p)
            ys, c, events = EGRUScan.apply(
                gx_all,
                c,
                y,
                self.weight_hh,
                self.bias_hh,
                self.threshold,
                keep,
                1.0 - p,
                self.dampening_factor,
                self.pseudo_derivative_support,
            )
        unit_steps = ys.numel()
        self._events += float(events)
        self._unit_steps += unit_steps
        self.last_activity_rate = float(events) / unit_steps
        return ys, (c, ys[-1])

    def _recurrent_params(self) -> int:
        return sum(
            p.numel()
            for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.threshold)
        )

    def _state_floats(self) -> int:
        # state c and sparse output y, plus the running block sum for mean reduction
        return self.d_hidden * (2 + (self.reduction == "mean"))

    def _recurrent_cost_extra(self, step_rate_hz: float) -> dict[str, Any]:
        """Event-driven MAC/s: input projections dense, recurrent matrix scaled by activity.

        Uses the measured ``activity_rate``; before any forward it is taken as 1 (dense).
        """
        activity = self.activity_rate if self.activity_rate is not None else 1.0
        h = self.d_hidden
        dense_in = 3 * self.in_features * h * step_rate_hz
        return {"event_macs_per_s": dense_in + 3 * h * h * step_rate_hz * activity}
