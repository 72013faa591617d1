"""The EGRU recurrence (Subramoney et al., ICLR 2023) and its surrogate gradient.

:class:`SpikeFunction` is the Heaviside step with the EGRU's triangular pseudo-derivative,
:func:`gru_cell` one GRU update in ``torch.nn.GRU``'s gate layout and :class:`EGRUScan` the whole
recurrence with a hand-written backward pass. Written in plain PyTorch because the reference
implementation (EvNN) needs a compiled CUDA/C++ extension. The step-by-step autograd version
that specifies :class:`EGRUScan` lives with the tests (tests/egru_reference.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["EGRUScan", "SpikeFunction", "gru_cell"]


class SpikeFunction(torch.autograd.Function):
    """Heaviside step ``H(v) = [v > 0]`` with the EGRU pseudo-derivative.

    Backward: ``gamma * max(0, 1 - |v| / epsilon)`` (gamma the dampening factor, epsilon the
    support), a triangle around the threshold.
    """

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, gamma: float, epsilon: float) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.gamma, ctx.epsilon = gamma, epsilon
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (v,) = ctx.saved_tensors
        surrogate = ctx.gamma * torch.clamp(1.0 - v.abs() / ctx.epsilon, min=0.0)
        return grad * surrogate, None, None


def gru_cell(
    gx: torch.Tensor,
    h_in: torch.Tensor,
    c_prev: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: torch.Tensor,
) -> torch.Tensor:
    """One GRU update in ``torch.nn.GRU``'s gate layout (r, z, n).

    ``gx`` ``(N, 3H)`` is the precomputed input projection ``W_ih x + b_ih``; the gates read
    ``h_in`` ``(N, H)`` (the EGRU's sparse output, the GRU's state) and the convex update mixes
    ``c_prev`` with the candidate. Returns the new state ``(N, H)``.
    """
    gh = F.linear(h_in, weight_hh, bias_hh)
    hidden = c_prev.shape[-1]
    rz = torch.sigmoid(gx[:, : 2 * hidden] + gh[:, : 2 * hidden])
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = torch.tanh(gx[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
    return n + z * (c_prev - n)  # = (1 - z) * n + z * c_prev


class EGRUScan(torch.autograd.Function):
    """The EGRU recurrence over a sequence with a hand-written backward pass (BPTT).

    ``apply(gx_all, c0, y0, weight_hh, bias_hh, theta, keep, keep_const, gamma, epsilon) ->
    (ys (T, N, H), c_T (N, H), number of events)``; ``keep`` is the training zoneout mask
    ``(T, N, H)`` or None, then ``keep_const`` (``1 - p`` in eval, 1 without zoneout) is used.
    Same values and gradients as ``egru_scan_reference`` (tests/egru_reference.py). Written
    by hand because autograd over a Python loop of ~20 small ops per step spends most of its
    time on graph bookkeeping: here the forward records no graph and the backward is one loop
    of plain tensor ops.
    """

    @staticmethod
    def forward(
        ctx: Any,
        gx_all: torch.Tensor,
        c0: torch.Tensor,
        y0: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_hh: torch.Tensor,
        theta: torch.Tensor,
        keep: torch.Tensor | None,
        keep_const: float,
        gamma: float,
        epsilon: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps, batch, three_h = gx_all.shape
        h = three_h // 3
        # Per-step results are written straight into the buffers the backward needs (out=).
        ys, n_all, c_new_all = (gx_all.new_empty(steps, batch, h) for _ in range(3))
        gh_all = gx_all.new_empty(steps, batch, 3 * h)
        rz_all = gx_all.new_empty(steps, batch, 2 * h)
        c_all = gx_all.new_empty(steps + 1, batch, h)  # c_all[t]: state before step t
        c_all[0] = c0
        w_t = weight_hh.t()
        zero = gx_all.new_zeros(())
        y = y0
        for t in range(steps):
            gx, gh, rz, c = gx_all[t], gh_all[t], rz_all[t], c_all[t]
            torch.addmm(bias_hh, y, w_t, out=gh)
            torch.sigmoid(gx[:, : 2 * h] + gh[:, : 2 * h], out=rz)
            n = torch.tanh(torch.addcmul(gx[:, 2 * h :], rz[:, :h], gh[:, 2 * h :]), out=n_all[t])
            c_hat = torch.lerp(n, c, rz[:, h:])  # (1 - z) * n + z * c
            k = keep[t] if keep is not None else keep_const
            c_new = torch.lerp(c, c_hat, k, out=c_new_all[t])
            fired = c_new > theta
            y = torch.where(fired, c_new, zero, out=ys[t])
            torch.where(fired, c_new - theta, c_new, out=c_all[t + 1])
        events = (c_new_all > theta).sum().to(gx_all.dtype)
        ctx.save_for_backward(y0, ys, rz_all, n_all, gh_all, c_all, c_new_all, weight_hh, theta)
        ctx.keep, ctx.keep_const, ctx.gamma, ctx.epsilon = keep, keep_const, gamma, epsilon
        ctx.mark_non_differentiable(events)
        return ys, c_all[steps].clone(), events

    @staticmethod
    def backward(
        ctx: Any, grad_ys: torch.Tensor | None, grad_c: torch.Tensor | None, _: Any
    ) -> tuple[torch.Tensor | None, ...]:
        with torch.autocast(ctx.saved_tensors[0].device.type, enabled=False):
            return EGRUScan._backward(ctx, grad_ys, grad_c)

    @staticmethod
    def _backward(
        ctx: Any, grad_ys: torch.Tensor | None, grad_c: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        saved = ctx.saved_tensors
        y0, ys, rz_all, n_all, gh_all, c_all, c_new_all, weight_hh, theta = saved
        steps, batch, h = n_all.shape
        # Everything that does not depend on the incoming gradient, for all steps at once.
        r, z = rz_all[..., :h], rz_all[..., h:]
        v = c_new_all - theta
        event = (v > 0).to(v.dtype)
        surrogate = ctx.gamma * torch.clamp(1.0 - v.abs() / ctx.epsilon, min=0.0)
        one_minus_z = 1.0 - z
        to_a_n = one_minus_z * (1.0 - n_all * n_all)  # c_hat -> pre-tanh of n
        to_a_z = (c_all[:-1] - n_all) * z * one_minus_z  # c_hat -> pre-sigmoid of z
        to_a_r = gh_all[..., 2 * h :] * r * (1.0 - r)  # pre-tanh of n -> pre-sigmoid of r
        keep = ctx.keep if ctx.keep is not None else ctx.keep_const
        if grad_ys is None:
            grad_ys = torch.zeros_like(n_all)
        dc = torch.zeros_like(y0) if grad_c is None else grad_c.clone()
        dy_rec = torch.zeros_like(y0)
        d_gh = n_all.new_empty(steps, batch, 3 * h)
        d_a_n = n_all.new_empty(steps, batch, h)
        dv_all, dc_all = n_all.new_empty(steps, batch, h), n_all.new_empty(steps, batch, h)
        for t in range(steps - 1, -1, -1):
            dy = grad_ys[t] + dy_rec
            dc_all[t] = dc
            # y = event * c_new, c = c_new - event * theta, event = H(c_new - theta)
            dv = torch.mul(torch.addcmul(dy * c_new_all[t], dc, theta, value=-1.0), surrogate[t])
            dv_all[t] = dv
            dc_new = torch.addcmul(dc + dv, dy, event[t])
            # zoneout: c_new = c + k * (c_hat - c); c_hat = (1 - z) * n + z * c
            dc_hat = dc_new * (keep[t] if isinstance(keep, torch.Tensor) else keep)
            dc = torch.addcmul(dc_new, dc_hat, one_minus_z[t], value=-1.0)
            a_n = torch.mul(dc_hat, to_a_n[t], out=d_a_n[t])
            torch.mul(a_n, to_a_r[t], out=d_gh[t, :, :h])
            torch.mul(dc_hat, to_a_z[t], out=d_gh[t, :, h : 2 * h])
            torch.mul(a_n, r[t], out=d_gh[t, :, 2 * h :])
            dy_rec = d_gh[t] @ weight_hh
        d_gx = torch.cat([d_gh[..., : 2 * h], d_a_n], dim=-1)
        flat_gh = d_gh.reshape(-1, 3 * h)
        # the gates of step t read the output of step t - 1
        y_prev = torch.cat([y0.unsqueeze(0), ys[:-1]]).reshape(-1, h)
        d_weight = flat_gh.t() @ y_prev
        d_theta = -(dc_all * event + dv_all).sum(dim=(0, 1))
        return d_gx, dc, dy_rec, d_weight, flat_gh.sum(0), d_theta, None, None, None, None
