"""The S4D layer's training path: the causal FFT convolution and the kernel as autograd
functions with hand-written backwards.

``causal_conv(u, k)`` computes ``y[t, n, h] = Σ_{j <= t} k[h, j] u[t - j, n, h]`` for a
time-first ``u (L, N, H)`` and a kernel ``k (H, L)``, the maths of the reference's FFT
convolution (``s4d_reference.ssm_conv`` without the ``D`` skip), with a hand-written backward:

* the gradients are the two correlations ``∂u = irfft(G · conj(K))`` and
  ``∂k = irfft(Σ_n G · conj(U))`` of the spectra the forward pass already computed (``K``, the
  kernel's FFT, and ``U``, the input's, are saved), so the backward runs one real FFT and two
  inverse ones; autograd through ``rfft(n=2L)`` instead runs a full complex FFT of the padded
  length per call and zero-fills the padding (measured ~2.5x slower per layer, forward and
  backward together, at batch 8 x 104 frames);
* the FFT length is the smallest even 5-smooth number ``>= 2L - 1`` (``fft_len``): ``2L - 1``
  already avoids the circular wrap-around, ``2L`` can have a large prime factor
  (``L = 345`` frames, the 16 s windows: ``690 = 2·3·5·23``), and an odd length runs ~2x
  slower per element (S4_large's ``L = 325`` and ``8,300`` frames: ``675``, ``16,875``);
* the output and ``∂u`` are contiguous time-first tensors, so the GELU, GLU, dropout and
  LayerNorm after the convolution run on one memory layout (a permuted FFT output made
  ``gelu_backward`` take its non-vectorised path, ~9x slower per call); from
  ``LARGE_CONV_NUMEL`` elements the FFTs' rows are made by 2-D transposes, which PyTorch
  copies faster than 3-D permutes.

``kernel`` builds the SSM kernel from blocks of powers with its own backward (see
``_Kernel``) and ``stacked_kernels`` runs it once for several layers (their parameters
concatenated along the channels): at the TC models' sizes (H = 96, 16 modes, 54-345 steps)
its ~50 operators on small tensors cost more than their arithmetic.

Same values as the reference up to float rounding (tests/test_train_paths.py,
tests/test_fast_paths.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def fft_len(minimum: int) -> int:
    """The smallest even ``n >= minimum`` whose only prime factors are 2, 3 and 5: a real FFT
    of even length runs as a complex one of half the length (an odd 5-smooth length such as
    ``675`` or ``16,875`` measured ~2x slower per element than the next even one)."""
    n = max(int(minimum), 2)
    while True:
        rest = n
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1 and n % 2 == 0:
            return n
        n += 1


#: from this many elements (``L·N·H``) the convolution takes its large-tensor path (2-D
#: transposes, the conjugate taken in place); below it (in cache) the plain way costs no more
#: (whole TC_S4_small steps measured ~2 % slower with the large-tensor path)
LARGE_CONV_NUMEL = 1 << 20


def _rows(x: torch.Tensor, large: bool) -> torch.Tensor:
    """``(L, N, H) -> (N, H, L)`` for the FFTs: a large tensor contiguous by a 2-D transpose
    (PyTorch copies it ~4x faster than the 3-D permute: 6.6 against 29 ms at 1,300 x 8 x 256),
    a small one as a permuted view that the padded FFT copies anyway."""
    if not large:
        return x.permute(1, 2, 0)
    length, batch, h = x.shape
    return x.reshape(length, -1).t().contiguous().view(batch, h, length)


def _time_first(y: torch.Tensor, length: int, large: bool) -> torch.Tensor:
    """The first ``length`` steps of ``y (N, H, n)`` as a contiguous ``(length, N, H)``; for a
    large tensor a contiguous slice, then a 2-D transpose (the 2-D transpose of a strided
    slice is the slow copy again)."""
    if not large:
        return y[..., :length].permute(2, 0, 1).contiguous()
    batch, h, _ = y.shape
    rows = y.view(batch * h, -1)[:, :length].contiguous()
    return rows.t().contiguous().view(length, batch, h)


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # noqa: D102
        length = u.shape[0]
        n = fft_len(2 * length - 1)
        large = u.numel() >= LARGE_CONV_NUMEL
        u_f = torch.fft.rfft(_rows(u, large), n=n)  # (N, H, n // 2 + 1)
        k_f = torch.fft.rfft(k, n=n)  # (H, n // 2 + 1)
        y = torch.fft.irfft(u_f * k_f, n=n)
        ctx.save_for_backward(u_f, k_f)
        ctx.n, ctx.large = n, large
        return _time_first(y, length, large)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        u_f, k_f = ctx.saved_tensors
        n, large, length = ctx.n, ctx.large, grad.shape[0]
        g_f = torch.fft.rfft(_rows(grad, large), n=n)  # (N, H, n // 2 + 1)
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_u = _time_first(torch.fft.irfft(g_f * k_f.conj(), n=n), length, large)
        if ctx.needs_input_grad[1]:
            if not large:
                grad_k = torch.fft.irfft((g_f * u_f.conj()).sum(0), n=n)[..., :length]
            else:  # the product would materialise conj(U), a copy of the whole spectrum:
                # Σ_n G conj(U) = conj(Σ_n conj(G) U), conjugating G in place (its own buffer)
                torch.view_as_real(g_f)[..., 1].neg_()
                grad_k = torch.fft.irfft((g_f * u_f).sum(0).conj(), n=n)[..., :length]
        return grad_u, grad_k


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution of ``u (L, N, H)`` with ``k (H, L)`` along time: ``(L, N, H)``,
    contiguous (see the module docstring); differentiable in both arguments, once."""
    if u.shape[0] != k.shape[-1] or u.shape[-1] != k.shape[0]:
        raise ValueError(f"causal_conv: u {tuple(u.shape)} and k {tuple(k.shape)} disagree")
    return _CausalConv.apply(u, k)


def _powers(x: torch.Tensor, y: torch.Tensor, steps: torch.Tensor, dim: int) -> torch.Tensor:
    """``exp((x + iy) t)`` for every ``t`` in ``steps (T,)``, ``x, y (H, M)``: real parts and
    imaginary parts side by side along ``dim``, with ``t`` on the other inner axis:
    ``dim=1`` gives ``(H, 2M, T)`` (rows ``:M`` real), ``dim=2`` gives ``(H, T, 2M)``."""
    if dim == 1:
        mag, angle = torch.exp(x.unsqueeze(-1) * steps), y.unsqueeze(-1) * steps
    else:
        mag, angle = torch.exp(x.unsqueeze(1) * steps[:, None]), y.unsqueeze(1) * steps[:, None]
    m = x.shape[-1]
    shape = [*mag.shape]
    shape[dim] = 2 * m
    out = x.new_empty(shape)
    torch.mul(mag, torch.cos(angle), out=out.narrow(dim, 0, m))
    torch.mul(mag, torch.sin(angle), out=out.narrow(dim, m, m))
    return out


class _Kernel(torch.autograd.Function):
    """``K[h, l] = 2 Re(Σ_m W[h, m] Ā[h, m]^l)``, ``W = C B̄``, from the raw S4D parameters.

    Forward: blocks of powers ``Ā^(bB + i) = Ā^(bB) Ā^i`` (``B ≈ sqrt(L)``), one real matmul.
    Backward, by hand (``g = ∂loss/∂K``, PyTorch's convention ``∂/∂Re + i ∂/∂Im`` for complex
    intermediates): ``∂W = 2 Σ_l g_l conj(Ā^l)`` and ``∂(dt A) = 2 conj(W) Σ_l l g_l conj(Ā^l)``,
    both from one matmul of ``[g; l g]`` (cut in blocks) with the inner powers and a product
    with the outer powers summed over the blocks, then the chain rule through
    ``B̄ = (e^(dt A) - 1) / A``, ``dt A`` and ``A = -exp(log_A_real) + i A_imag`` on
    ``(H, modes)`` tensors. The powers are real tensors with the real and imaginary parts as
    blocks of one axis, laid out so that the elementwise work runs along the modes: complex
    tensors' ``.real`` / ``.imag`` views are strided, and an innermost axis of B ~ 7-19
    steps is too short to vectorise (both measured ~1.4x slower per kernel, forward and
    backward, than this layout).
    """

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any,
        log_dt: torch.Tensor,
        log_a_real: torch.Tensor,
        a_imag: torch.Tensor,
        c_pairs: torch.Tensor,
        length: int,
    ) -> torch.Tensor:
        h, m = log_a_real.shape
        dt = torch.exp(log_dt).unsqueeze(-1)  # (H, 1)
        a_real = -torch.exp(log_a_real)
        x, y = a_real * dt, a_imag * dt  # dt A = x + i y
        a = torch.complex(a_real, a_imag)
        e = torch.exp(x) * torch.complex(torch.cos(y), torch.sin(y))  # Ā = exp(dt A)
        b_bar = (e - 1.0) / a
        c = torch.view_as_complex(c_pairs.contiguous())
        w = c * b_bar
        block = max(1, math.isqrt(max(length, 1)))
        n_blocks = -(-length // block)
        steps = torch.arange(max(block, n_blocks), device=x.device, dtype=x.dtype)
        inner = _powers(x, y, steps[:block], dim=1)  # (H, 2M, B): Ā^i, i < B
        outer = _powers(x, y, steps[:n_blocks] * block, dim=2)  # (H, nb, 2M): Ā^(bB)
        # 2 Re(X Y) = (2 Re X) Re Y + (-2 Im X) Im Y with X = W Ā^(bB): one real matmul
        w2r, w2i = (2 * w.real).unsqueeze(1), (2 * w.imag).unsqueeze(1)  # (H, 1, M)
        o_r, o_i = outer[..., :m], outer[..., m:]
        xs = torch.empty_like(outer)
        torch.mul(o_r, w2r, out=xs[..., :m]).addcmul_(o_i, w2i, value=-1.0)
        torch.mul(o_i, w2r, out=xs[..., m:]).addcmul_(o_r, w2i).neg_()
        k = torch.bmm(xs, inner)  # (H, nb, B)
        ctx.save_for_backward(dt, a, a_real, e, b_bar, c, w, outer, inner)
        ctx.length = length
        return k.reshape(h, -1)[:, :length]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        dt, a, a_real, e, b_bar, c, w, outer, inner = ctx.saved_tensors
        length = ctx.length
        h, n_blocks, two_m = outer.shape
        m, block = two_m // 2, inner.shape[-1]
        # [g; l g] cut in blocks: (H, 2 nb, B)
        g2 = grad.new_zeros(h, 2, n_blocks * block)
        g2[:, 0, :length] = grad
        steps = torch.arange(length, device=grad.device, dtype=grad.dtype)
        torch.mul(grad, steps, out=g2[:, 1, :length])
        # U = Σ_i g_(bB+i) Ā^i per block: (H, 2 nb, 2M), real parts then imaginary parts
        u = torch.bmm(g2.view(h, 2 * n_blocks, block), inner.transpose(1, 2))
        u = u.view(h, 2, n_blocks, two_m)
        u_re, u_im = u[..., :m], u[..., m:]
        o_re, o_im = outer[..., :m].unsqueeze(1), outer[..., m:].unsqueeze(1)  # (H, 1, nb, M)
        # Σ_b conj(Ā^(bB)) conj(U_b) = Σ_b (o_re - i o_im)(u_re - i u_im)
        s_re = (u_re * o_re).addcmul_(u_im, o_im, value=-1.0).sum(2)  # (H, 2, M)
        s_im = (u_im * o_re).addcmul_(u_re, o_im).sum(2).neg_()
        s = torch.complex(s_re, s_im)  # [:, 0]: Σ_l g conj(Ā^l); [:, 1]: Σ_l l g conj(Ā^l)
        grad_w = 2 * s[:, 0]
        grad_b_bar = grad_w * c.conj()
        grad_dt_a = 2 * w.conj() * s[:, 1] + grad_b_bar * (e / a).conj()
        grad_a = grad_dt_a * dt - grad_b_bar * (b_bar / a).conj()
        grad_dt = (grad_dt_a.conj() * a).real.sum(-1)
        return (
            grad_dt * dt.squeeze(-1),
            grad_a.real * a_real,
            grad_a.imag,
            torch.view_as_real(grad_w * b_bar.conj()),
            None,
        )


def kernel(
    log_dt: torch.Tensor,
    log_a_real: torch.Tensor,
    a_imag: torch.Tensor,
    c_pairs: torch.Tensor,
    length: int,
) -> torch.Tensor:
    """The S4D convolution kernel ``(H, length)`` from ``log_dt (H)``, ``log_A_real (H, M)``,
    ``A_imag (H, M)`` and ``C (H, M, 2)``; differentiable in all four, once."""
    return _Kernel.apply(log_dt, log_a_real, a_imag, c_pairs, length)


def stacked_kernels(
    params: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], length: int
) -> list[torch.Tensor]:
    """:func:`kernel` of several layers' ``(log_dt, log_A_real, A_imag, C)`` at one length,
    computed once on the parameters concatenated along the channels: ``[(H_i, length)]``."""
    if len(params) == 1:
        return [kernel(*params[0], length)]
    log_dt, log_a_real, a_imag, c_pairs = (torch.cat(g, dim=0) for g in zip(*params, strict=True))
    stacked = kernel(log_dt, log_a_real, a_imag, c_pairs, length)
    return list(stacked.split([p[0].shape[0] for p in params]))
