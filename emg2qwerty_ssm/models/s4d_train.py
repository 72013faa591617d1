"""The S4D layer's training path: the causal FFT convolution as one autograd function.

``causal_conv(u, k)`` computes ``y[t, n, h] = Σ_{j <= t} k[h, j] u[t - j, n, h]`` for a
time-first ``u (L, N, H)`` and a kernel ``k (H, L)``, the maths of the reference's FFT
convolution (``s4d_reference.ssm_conv`` without the ``D`` skip), with a hand-written backward:

* the gradients are the two correlations ``∂u = irfft(G · conj(K))`` and
  ``∂k = irfft(Σ_n G · conj(U))`` of the spectra the forward pass already computed (``K``, the
  kernel's FFT, and ``U``, the input's, are saved), so the backward runs one real FFT and two
  inverse ones; autograd through ``rfft(n=2L)`` instead runs a full complex FFT of the padded
  length per call and zero-fills the padding (measured ~2.5x slower per layer, forward and
  backward together, at batch 8 x 104 frames);
* the FFT length is the smallest 5-smooth number ``>= 2L - 1`` (``fft_len``): ``2L - 1``
  already avoids the circular wrap-around, and ``2L`` can have a large prime factor
  (``L = 345`` frames, the 16 s windows: ``690 = 2·3·5·23``);
* the output and ``∂u`` are contiguous time-first tensors, so the GELU, GLU, dropout and
  LayerNorm after the convolution run on one memory layout (a permuted FFT output made
  ``gelu_backward`` take its non-vectorised path, ~9x slower per call).

Same values as the reference up to float rounding (tests/test_fast_paths.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def fft_len(minimum: int) -> int:
    """The smallest ``n >= minimum`` whose only prime factors are 2, 3 and 5 (fast in
    pocketfft, the CPU FFT behind ``torch.fft``)."""
    n = max(int(minimum), 1)
    while True:
        rest = n
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return n
        n += 1


class _CausalConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # noqa: D102
        length = u.shape[0]
        n = fft_len(2 * length - 1)
        u_f = torch.fft.rfft(u.permute(1, 2, 0), n=n)  # (N, H, n // 2 + 1)
        k_f = torch.fft.rfft(k, n=n)  # (H, n // 2 + 1)
        y = torch.fft.irfft(u_f * k_f, n=n)[..., :length]
        ctx.save_for_backward(u_f, k_f)
        ctx.length, ctx.n = length, n
        return y.permute(2, 0, 1).contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        u_f, k_f = ctx.saved_tensors
        length, n = ctx.length, ctx.n
        g_f = torch.fft.rfft(grad.permute(1, 2, 0), n=n)  # (N, H, n // 2 + 1)
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            g_u = torch.fft.irfft(g_f * k_f.conj(), n=n)[..., :length]
            grad_u = g_u.permute(2, 0, 1).contiguous()
        if ctx.needs_input_grad[1]:
            grad_k = torch.fft.irfft((g_f * u_f.conj()).sum(0), n=n)[..., :length]
        return grad_u, grad_k


def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution of ``u (L, N, H)`` with ``k (H, L)`` along time: ``(L, N, H)``,
    contiguous (see the module docstring); differentiable in both arguments, once."""
    if u.shape[0] != k.shape[-1] or u.shape[-1] != k.shape[0]:
        raise ValueError(f"causal_conv: u {tuple(u.shape)} and k {tuple(k.shape)} disagree")
    return _CausalConv.apply(u, k)


def _cexp(z: torch.Tensor) -> torch.Tensor:
    """``exp(z)`` for complex ``z`` via real ``exp``/``cos``/``sin`` (~5x faster on CPU)."""
    mag = torch.exp(z.real)
    return torch.complex(mag * torch.cos(z.imag), mag * torch.sin(z.imag))


class _Kernel(torch.autograd.Function):
    """``K[h, l] = 2 Re(Σ_m W[h, m] Ā[h, m]^l)``, ``W = C B̄``, from the raw S4D parameters.

    Forward: blocks of powers ``Ā^(bB + i) = Ā^(bB) Ā^i`` (``B ≈ sqrt(L)``), one real matmul.
    Backward, by hand (``g = ∂loss/∂K``, PyTorch's convention ``∂/∂Re + i ∂/∂Im`` for complex
    intermediates): ``∂W = 2 Σ_l g_l conj(Ā^l)`` and ``∂(dt A) = 2 conj(W) Σ_l l g_l conj(Ā^l)``,
    both from one matmul of ``[g; l g]`` with the inner powers, then the chain rule through
    ``B̄ = (e^(dt A) - 1) / A``, ``dt A`` and ``A = -exp(log_A_real) + i A_imag`` on
    ``(H, modes)`` tensors: ~30 small operators instead of autograd's graph of ~60.
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
        a = torch.complex(a_real, a_imag)
        dt_a = a * dt
        e = _cexp(dt_a)
        b_bar = (e - 1.0) / a
        c = torch.view_as_complex(c_pairs.contiguous())
        w = c * b_bar
        block = max(1, math.isqrt(max(length, 1)))
        n_blocks = -(-length // block)
        dev = dt_a.device
        inner = _cexp(dt_a.unsqueeze(-1) * torch.arange(block, device=dev))  # (H, M, B)
        steps = torch.arange(n_blocks, device=dev) * float(block)
        outer = _cexp(dt_a.unsqueeze(-1) * steps).transpose(1, 2)  # (H, nb, M): Ā^(bB)
        x = w.unsqueeze(1) * outer
        # 2 Re(X Y) = 2 (Re X Re Y - Im X Im Y) as one real matmul
        y = torch.cat([inner.real, inner.imag], dim=-2)  # (H, 2M, B)
        k = 2 * torch.bmm(torch.cat([x.real, -x.imag], dim=-1), y)  # (H, nb, B)
        ctx.save_for_backward(dt, a, a_real, e, b_bar, c, w, outer, y)
        ctx.length, ctx.block = length, block
        return k.reshape(h, -1)[:, :length]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        dt, a, a_real, e, b_bar, c, w, outer, y = ctx.saved_tensors
        length, block = ctx.length, ctx.block
        h, n_blocks, m = outer.shape
        padded = grad.new_zeros(h, n_blocks * block)
        padded[:, :length] = grad
        steps = torch.arange(n_blocks * block, device=grad.device, dtype=grad.dtype)
        g = torch.cat([padded, padded * steps], dim=0).reshape(2, h, n_blocks, block)
        g = g.permute(1, 0, 2, 3).reshape(h, 2 * n_blocks, block)
        # Σ_i g[bB + i] conj(Ā^i): real part against Re Ā^i, imaginary against -Im Ā^i
        r = torch.bmm(g, y.transpose(1, 2))  # (H, 2 nb, 2M)
        t = torch.complex(r[..., :m], -r[..., m:]) * outer.conj().repeat(1, 2, 1)
        s = t.reshape(h, 2, n_blocks, m).sum(2)  # (H, 2, M): Σ_l g conj(Ā^l), Σ_l l g conj(Ā^l)
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
