"""Surrogate-gradient functions of the spiking front-end (``snn.py``).

- :class:`ATanSpike`: Heaviside step ``H(x) = [x >= 0]`` forward; backward the derivative of the
  smooth arctangent step ``g(x) = atan(pi/2 * alpha * x) / pi + 1/2``, i.e.
  ``g'(x) = alpha / 2 / (1 + (pi/2 * alpha * x)^2)`` (spikingjelly's ``surrogate.ATan``, which
  the authors' ``SJ_SNN`` uses with ``alpha = alpha_surr_grad``).
- :class:`SugarReLU`: ReLU forward; backward the derivative of B-SiLU
  ``(x + a) * sigmoid(x) - a / 2`` with ``a = 1.67`` (the authors' ``sparse_sugar_X``).
- :func:`post_reduction_activation`: the ``activation_post_reduction`` options.
- :class:`LIFScan`: the LIF membrane recurrence with the arctangent surrogate and a
  hand-written backward pass.

All are element-wise and shape-preserving.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

#: B-SiLU's shift in the authors' ``Sugar`` backward
SUGAR_ALPHA = 1.67


def atan_smooth_step(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The smooth step whose derivative is the arctangent surrogate (for tests and plots)."""
    return torch.atan(math.pi / 2 * alpha * x) / math.pi + 0.5


def atan_surrogate_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """``d/dx atan_smooth_step(x, alpha) = alpha / 2 / (1 + (pi/2 * alpha * x)^2)``."""
    return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)


class ATanSpike(torch.autograd.Function):
    """``apply(x, alpha) -> [x >= 0]`` with the arctangent surrogate gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * atan_surrogate_grad(x, ctx.alpha), None


def sugar_surrogate_grad(x: torch.Tensor) -> torch.Tensor:
    """Derivative of B-SiLU ``(x + a) sigmoid(x) - a/2``: ``s (1 + (x + a)(1 - s))``."""
    s = torch.sigmoid(x)
    return s * (1 + (x + SUGAR_ALPHA) * (1 - s))


class SugarReLU(torch.autograd.Function):
    """``apply(x) -> relu(x)`` with the B-SiLU surrogate gradient (SUGAR)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * sugar_surrogate_grad(x)


class _SugarModule(nn.Module):
    def __init__(self, width: float) -> None:
        super().__init__()
        self.width = width  # the seed's X: only its (detached) non-zero statistic used it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SugarReLU.apply(x)


def post_reduction_activation(name: str) -> nn.Module:
    """``none`` | ``relu`` | ``gelu`` | ``sparse_relu_X`` | ``sparse_sugar_X``.

    ``sparse_relu_X`` is ReLU in forward and backward: the seed's smooth-step of width X only
    fed a detached non-zero count, which the front-end measures directly. ``sparse_sugar_X`` is
    ReLU forward with the SUGAR backward.
    """
    if name == "none":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    for prefix in ("sparse_relu_", "sparse_sugar_"):
        if name.startswith(prefix):
            try:
                # sparse_relu_tie_X: the seed's "tied" threshold is 0 as well, so the same
                width = float(name[len(prefix) :].removeprefix("tie_"))
            except ValueError:
                break
            if prefix == "sparse_relu_":
                from emg2qwerty_ssm.models.encoder import SparseReLU

                return SparseReLU(width)
            return _SugarModule(width)
    raise ValueError(
        f"activation_post_reduction must be none, relu, gelu, sparse_relu_<X> or "
        f"sparse_sugar_<X>, got {name!r}"
    )


class LIFScan(torch.autograd.Function):
    """The LIF membrane recurrence over a sequence with a hand-written backward pass (BPTT).

    ``apply(drive, v0, keep, v_threshold, v_reset, alpha, spiking, detach_reset, detach_every)
    -> (out (T, N, C), v_seq (T, N, C))`` for ``h_t = keep * v_{t-1} + drive_t`` (``keep = 1 -
    1/tau`` a float or a 0-dim tensor, the PLIF case), ``s_t = H(h_t - v_threshold)`` with the
    arctangent surrogate, ``v_t = h_t - s_t v_threshold`` (``v_reset`` None) or ``s_t v_reset +
    (1 - s_t) h_t``; ``out`` is ``s`` or, with ``spiking=False``, ``v``. ``detach_every``
    cuts the gradient of the membrane after every that many steps. Same values and gradients
    as ``LIFNeurons.scan_reference`` (tested). Written by hand because autograd over a Python
    loop of ~6 small ops per step spends most of its time on graph bookkeeping.
    """

    @staticmethod
    def forward(
        ctx: Any,
        drive: torch.Tensor,
        v0: torch.Tensor,
        keep: torch.Tensor | float,
        v_threshold: float,
        v_reset: float | None,
        alpha: float,
        spiking: bool,
        detach_reset: bool,
        detach_every: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a = float(keep) if isinstance(keep, torch.Tensor) else keep
        h_all = torch.empty_like(drive)
        v_all = torch.empty_like(drive)
        v = v0
        reset_value = drive.new_tensor(0.0 if v_reset is None else v_reset)
        for t in range(drive.shape[0]):
            h = torch.add(drive[t], v, alpha=a, out=h_all[t])
            if not spiking:
                v_all[t] = h
            elif v_reset is None:
                torch.where(h >= v_threshold, h - v_threshold, h, out=v_all[t])
            else:
                torch.where(h >= v_threshold, reset_value, h, out=v_all[t])
            v = v_all[t]
        out = (h_all >= v_threshold).to(drive.dtype) if spiking else v_all
        ctx.save_for_backward(h_all, v_all, v0)
        ctx.a, ctx.keep_is_tensor = a, isinstance(keep, torch.Tensor)
        ctx.cfg = (v_threshold, v_reset, alpha, spiking, detach_reset, detach_every)
        return out, v_all

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor | None, grad_v: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        h_all, v_all, v0 = ctx.saved_tensors
        v_threshold, v_reset, alpha, spiking, detach_reset, detach_every = ctx.cfg
        a = ctx.a
        steps = h_all.shape[0]
        g_v = torch.zeros_like(h_all) if grad_v is None else grad_v.clone()
        if not spiking:
            if grad_out is not None:
                g_v += grad_out  # out is v itself
            from_out = torch.zeros_like(h_all)
            dv_dh = torch.ones_like(h_all)
        else:
            sg = atan_surrogate_grad(h_all - v_threshold, alpha)
            from_out = torch.zeros_like(h_all) if grad_out is None else grad_out * sg
            if v_reset is None:  # v = h - s theta
                dv_dh = torch.ones_like(h_all) if detach_reset else 1.0 - v_threshold * sg
            else:  # v = s v_r + (1 - s) h
                dv_dh = 1.0 - (h_all >= v_threshold).to(h_all.dtype)
                if not detach_reset:
                    dv_dh = dv_dh + (v_reset - h_all) * sg
        d_h = torch.empty_like(h_all)
        carry = torch.zeros_like(v0)
        for t in range(steps - 1, -1, -1):
            if detach_every and (t + 1) % detach_every == 0:
                carry = torch.zeros_like(v0)  # v_t was detached before step t + 1 read it
            torch.addcmul(from_out[t], g_v[t] + carry, dv_dh[t], out=d_h[t])
            carry = d_h[t] * a
        d_keep = None
        if ctx.keep_is_tensor:
            v_prev = torch.cat([v0.unsqueeze(0), v_all[:-1]])
            d_keep = (d_h * v_prev).sum()
        return d_h, carry, d_keep, None, None, None, None, None, None


class LinearRecurrence(torch.autograd.Function):
    """``y_t = c_t * y_{t-1} + b_t`` over ``(T, N, C)`` with a hand-written backward.

    ``apply(c, b, y0) -> y (T, N, C)``; element-wise coefficients ``c`` and inputs ``b``
    ``(T, N, C)``, initial value ``y0`` ``(N, C)``. The synapse filter is this recurrence with
    ``c_t = 1 - (1 - S_t) / tau`` and ``b_t = S_t``; autograd handles those expressions.
    """

    @staticmethod
    def forward(ctx: Any, c: torch.Tensor, b: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        ys = torch.empty_like(b)
        y = y0
        for t in range(b.shape[0]):
            y = torch.addcmul(b[t], c[t], y, out=ys[t])
        ctx.save_for_backward(c, ys, y0)
        return ys

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c, ys, y0 = ctx.saved_tensors
        d_b = torch.empty_like(grad)
        carry = torch.zeros_like(y0)
        for t in range(grad.shape[0] - 1, -1, -1):
            carry = torch.add(grad[t], carry, out=d_b[t])
            carry = carry * c[t]  # into y_{t-1}
        y_prev = torch.cat([y0.unsqueeze(0), ys[:-1]])
        return d_b * y_prev, d_b, carry
