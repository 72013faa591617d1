"""Today's S4D math kept verbatim as the reference path (the oracle of the fast paths).

These functions are the S4D layer's arithmetic as it was before the fast paths of issue 11:
the discretisation recomputed on every call, the kernel built from ``H x modes x L`` complex
exponentials and chunks run through the closed form with freshly computed powers. They take an
:class:`~emg2qwerty_ssm.models.s4d.S4D` layer and use only its parameters, so tests and
benchmarks can compare the fast paths to them on the very same weights. ``reference_mode()``
makes every S4D layer dispatch here (benchmarks use it to time "today" in the same process).
Tensors are time-first ``(L, N, H)``; states are complex ``(N, H, modes)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from emg2qwerty_ssm.models.s4d import S4D


def discrete(layer: S4D) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dt·A``, ``B̄ = (Ā - 1) / A`` and complex ``C``, each ``(H, modes)``."""
    a = -torch.exp(layer.log_A_real) + 1j * layer.A_imag
    dt_a = a * torch.exp(layer.log_dt).unsqueeze(-1)
    b_bar = (torch.exp(dt_a) - 1.0) / a
    return dt_a, b_bar, torch.view_as_complex(layer.C.contiguous())


def kernel(layer: S4D, length: int) -> torch.Tensor:
    """``K[h, l] = 2 Re(Σ_n C B̄ Ā^l)``, ``(H, length)``, from H x modes x L exponentials."""
    dt_a, b_bar, c = discrete(layer)
    powers = torch.exp(dt_a.unsqueeze(-1) * torch.arange(length, device=dt_a.device))
    return 2 * torch.einsum("hn,hnl->hl", c * b_bar, powers).real


def ssm_conv(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """Zero-state SSM by FFT of size 2L: ``(L, N, H) -> (L, N, H)``."""
    length = u.shape[0]
    if length == 0:
        return u
    k = kernel(layer, length).to(u.dtype)
    u_f = torch.fft.rfft(u.permute(1, 2, 0), n=2 * length)
    y = torch.fft.irfft(u_f * torch.fft.rfft(k, n=2 * length), n=2 * length)[..., :length]
    return y.permute(2, 0, 1) + u * layer.D.to(u.dtype)


def ssm_chunk(
    layer: S4D, u: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk ``u (L, N, H)`` from complex ``state (N, H, modes)``: closed form of L steps."""
    length = u.shape[0]
    if length == 0:
        return u, state
    cdtype = state.dtype
    dt_a, b_bar, c = (t.to(cdtype) for t in discrete(layer))
    steps = torch.arange(length + 1, device=u.device, dtype=u.dtype)
    powers = torch.exp(dt_a.unsqueeze(-1) * steps)  # (H, modes, L + 1): Ā^0 .. Ā^L
    carry = 2 * torch.einsum("hm,bhm,hml->lbh", c, state, powers[..., 1:]).real
    y = ssm_conv(layer, u) + carry.to(u.dtype)
    driven = torch.einsum("hml,lbh->bhm", powers[..., :length].flip(-1), u.to(cdtype))
    return y, powers[..., length] * state + b_bar * driven


def ssm_step(
    layer: S4D, u_t: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrence step: ``u_t (N, H)``, ``state (N, H, modes)`` -> ``y_t (N, H)``."""
    dt_a, b_bar, c = (t.to(state.dtype) for t in discrete(layer))
    state = torch.exp(dt_a) * state + b_bar * u_t.unsqueeze(-1)
    y = 2 * torch.einsum("hm,bhm->bh", c, state).real
    return y.to(u_t.dtype) + u_t * layer.D.to(u_t.dtype), state


_ACTIVE = [False]


def is_active() -> bool:
    """True inside :func:`reference_mode`."""
    return _ACTIVE[0]


@contextmanager
def reference_mode(active: bool = True) -> Iterator[None]:
    """Run today's code paths inside the block: every S4D layer's reference maths, the TC
    front-end's Conv1d stack (not its folded Linear) and the encoder's roll/stack."""
    previous = _ACTIVE[0]
    _ACTIVE[0] = active
    try:
        yield
    finally:
        _ACTIVE[0] = previous
