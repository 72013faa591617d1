"""Building blocks of the spiking front-end (``snn.py``): per-block BatchNorm, LIF/PLIF
neurons and spikingjelly's learnable synapse filter, each with an explicit state.

Time-first shapes: sequences ``(T, N, C)``, states ``(N, C)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emg2qwerty_ssm.models.snn_surrogate import ATanSpike, LIFScan, LinearRecurrence


def _inverse_sigmoid_tau(tau: float) -> float:
    """spikingjelly's parametrisation of a learnable time constant: ``1/tau = sigmoid(w)``."""
    return -math.log(tau - 1.0)


class BlockBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d on ``(T, N, C)`` whose training statistics come from each block of
    ``block`` steps x batch separately, running statistics updated once per block in order.

    This is what spikingjelly's multi-step BatchNorm does when ``SJ_SNN`` feeds it one block
    at a time. In eval mode it is the usual per-channel affine map of the running statistics.
    """

    def forward_blocks(self, x: torch.Tensor, block: int) -> torch.Tensor:
        steps, batch, channels = x.shape
        if not self.training:
            flat = F.batch_norm(
                x.reshape(-1, channels),
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
            return flat.reshape(x.shape)
        n = block * batch
        if n < 2:
            raise ValueError(
                f"BlockBatchNorm1d: a block of {block} steps x batch {batch} has a single "
                "value per channel; batch statistics need at least 2"
            )
        blocks = x.reshape(steps // block, n, channels)
        mean = blocks.mean(1, keepdim=True)
        var = blocks.var(1, unbiased=False, keepdim=True)
        y = (blocks - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        running_mean, running_var = self.running_mean, self.running_var
        tracked = self.num_batches_tracked
        if running_mean is None or running_var is None or tracked is None:
            return y.reshape(x.shape)  # track_running_stats=False: nothing to update
        with torch.no_grad():  # sequential momentum updates, in closed form
            m = self.momentum if self.momentum is not None else 0.1
            count = blocks.shape[0]
            decay = (1.0 - m) ** torch.arange(count - 1, -1, -1, device=x.device, dtype=x.dtype)
            weights = (m * decay)[:, None]
            running_mean.mul_((1.0 - m) ** count).add_((weights * mean[:, 0]).sum(0))
            unbiased = var[:, 0] * (n / (n - 1))
            running_var.mul_((1.0 - m) ** count).add_((weights * unbiased).sum(0))
            tracked.add_(count)
        return y.reshape(x.shape)


class LIFNeurons(nn.Module):
    """A layer of LIF (fixed ``tau``) or PLIF (learnable ``tau``, one per layer) neurons.

    Per step: charge ``h = v + (x - (v - v_r)) / tau`` (``decay_input``) or
    ``h = v - (v - v_r) / tau + x``, with ``v_r = v_reset`` or 0 for soft reset; fire
    ``s = H(h - v_threshold)`` (arctangent surrogate); reset ``v = s v_reset + (1 - s) h``
    (hard) or ``v = h - s v_threshold`` (soft), ``s`` detached there with ``detach_reset``.
    ``spiking=False`` is the non-spiking read-out layer (threshold infinity, reset 0): ``v = h``.
    """

    def __init__(
        self,
        neuron: str,
        tau_mem: float,
        decay_input: bool,
        v_threshold: float,
        v_reset: float | None,
        detach_reset: bool,
        alpha: float,
        spiking: bool = True,
    ) -> None:
        super().__init__()
        self.neuron, self.decay_input, self.detach_reset = neuron, decay_input, detach_reset
        self.v_threshold, self.alpha, self.spiking = v_threshold, alpha, spiking
        self.v_reset = v_reset if spiking else 0.0
        self.tau_mem = tau_mem
        if neuron == "plif":
            self.w = nn.Parameter(torch.tensor(_inverse_sigmoid_tau(tau_mem)))

    def inv_tau(self) -> torch.Tensor | float:
        return torch.sigmoid(self.w) if self.neuron == "plif" else 1.0 / self.tau_mem

    def initial_v(self) -> float:
        """spikingjelly starts the membrane at ``v_reset`` (hard reset) or 0 (soft reset)."""
        return self.v_reset if self.v_reset is not None else 0.0

    def _drive(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """``h_t = keep * v_{t-1} + drive_t``: the input part, for all steps at once."""
        k = self.inv_tau()
        v_rest = self.v_reset if self.v_reset is not None else 0.0
        drive = k * (current + v_rest) if self.decay_input else current + k * v_rest
        return drive, 1.0 - k

    def scan(
        self, current: torch.Tensor, v: torch.Tensor, detach_every: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``current (T, N, C)``, ``v (N, C)`` -> (spikes or membrane ``(T, N, C)``, membrane
        after each step ``(T, N, C)``, last membrane ``(N, C)``). With ``detach_every`` the
        membrane is detached every that many steps (BPTT truncated at block boundaries).
        Runs :class:`LIFScan` (hand-written backward); same values and gradients as
        :meth:`scan_reference`."""
        drive, keep = self._drive(current)
        if drive.dtype in (torch.float16, torch.bfloat16):  # autocast: thresholds need float32
            drive, v = drive.float(), v.float()
        out, v_seq = LIFScan.apply(
            drive, v, keep, self.v_threshold, self.v_reset, self.alpha, self.spiking,
            self.detach_reset, detach_every or 0,
        )  # fmt: skip
        last = v_seq[-1]
        if detach_every and current.shape[0] % detach_every == 0:
            last = last.detach()
        return out, v_seq, last

    def scan_reference(
        self, current: torch.Tensor, v: torch.Tensor, detach_every: int | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`scan` step by step under autograd: the specification of :class:`LIFScan`."""
        drive, keep = self._drive(current)
        outs, vs = [], []
        for t in range(current.shape[0]):
            h = keep * v + drive[t]
            if self.spiking:
                s = ATanSpike.apply(h - self.v_threshold, self.alpha)
                sr = s.detach() if self.detach_reset else s
                v = (
                    h - sr * self.v_threshold
                    if self.v_reset is None
                    else h + sr * (self.v_reset - h)
                )
                outs.append(s)
            else:
                v = h
            vs.append(v)
            if detach_every and (t + 1) % detach_every == 0:
                v = v.detach()
        v_seq = torch.stack(vs)
        return (torch.stack(outs) if self.spiking else v_seq), v_seq, v


class SynapseFilter(nn.Module):
    """spikingjelly's learnable ``SynapseFilter``: ``I_t = I_{t-1} - (1 - S_t) I_{t-1} / tau + S_t``
    with ``1/tau = sigmoid(w)`` (one ``w`` per layer), ``I_0 = 0``."""

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(_inverse_sigmoid_tau(tau)))

    def scan(self, s: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``s (T, N, C)``, ``i (N, C)`` -> (traces ``(T, N, C)``, last trace ``(N, C)``)."""
        out = LinearRecurrence.apply(1.0 - (1.0 - s) * torch.sigmoid(self.w), s, i)
        return out, out[-1]

    def scan_reference(self, s: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`scan` step by step under autograd (its specification)."""
        k = torch.sigmoid(self.w)
        outs = []
        for t in range(s.shape[0]):
            i = i - (1.0 - s[t]) * i * k + s[t]
            outs.append(i)
        return torch.stack(outs), i
