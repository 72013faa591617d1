"""The S4D layer (docs/models.md#s4d-parameterisation): a diagonal complex state-space model with
two execution modes.

Training uses the FFT convolution with the materialised kernel; streaming uses the recurrence
with an explicit complex state. Both share the same parameters and give the same output
(tests/test_s4d.py). Tensors are time-first ``(L, N, H)`` as everywhere in the model.

Written by hand (not the ``state-spaces`` package) because we need step and chunk modes with an
explicit state object, and the whole layer is about a hundred lines.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SSMState = torch.Tensor  # (N, H, modes) complex


class TiedDropout(nn.Module):
    """Dropout with one mask per (batch, channel), shared over time ("DropoutNd, tied").

    Input ``(L, N, C)``; identity in eval mode.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(1, *x.shape[1:], device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class S4D(nn.Module):
    """S4D block: SSM convolution + D skip → GELU → tied dropout → Conv1d(H, 2H, 1) → GLU.

    Parameters (``d_state`` real state size = ``d_state // 2`` complex modes per channel):
    ``log_dt (H)``, ``C (H, modes, 2)`` (real, imag), ``log_A_real (H, modes)``,
    ``A_imag (H, modes)``, ``D (H)`` and ``out_conv`` (Conv1d H→2H, kernel 1). The three
    timescale parameters carry an ``_optim`` hint ``{"lr": ssm_lr, "weight_decay": 0.0}``
    (docs/recipe.md#optimizer) that :meth:`EMGModel.param_groups` honours.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 32,
        dropout: float = 0.0,
        dt_min: float = 0.04,
        dt_max: float = 4.0,
        ssm_lr: float | None = 5e-4,
    ) -> None:
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be even and >= 2 (conjugate pairs), got {d_state}")
        h, n = d_model, d_state // 2
        self.d_model, self.modes = h, n
        log_dt = torch.rand(h) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(h, n, dtype=torch.cfloat)))
        self.log_A_real = nn.Parameter(torch.full((h, n), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(n, dtype=torch.float).repeat(h, 1))
        self.D = nn.Parameter(torch.randn(h))
        self.ssm_lr = ssm_lr
        for name, hint in self.optim_hints().items():
            getattr(self, name)._optim = hint
        self.dropout = TiedDropout(dropout)
        self.out_conv = nn.Conv1d(h, 2 * h, kernel_size=1)

    def optim_hints(self) -> dict[str, dict[str, float]]:
        """``{parameter name: optimizer hint}``; kept here too because ``deepcopy`` of a
        Parameter drops attributes such as ``_optim``."""
        hint: dict[str, float] = {"weight_decay": 0.0}
        if self.ssm_lr is not None:
            hint["lr"] = self.ssm_lr
        return {name: dict(hint) for name in ("log_dt", "log_A_real", "A_imag")}

    # -- discretisation (zero-order hold) --------------------------------------------------
    def _discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``dt·A``, ``B̄ = (Ā - 1) / A`` and complex ``C``, each ``(H, modes)``."""
        a = -torch.exp(self.log_A_real) + 1j * self.A_imag
        dt_a = a * torch.exp(self.log_dt).unsqueeze(-1)
        b_bar = (torch.exp(dt_a) - 1.0) / a
        return dt_a, b_bar, torch.view_as_complex(self.C.contiguous())

    def kernel(self, length: int) -> torch.Tensor:
        """Convolution kernel ``K[h, l] = 2 Re(Σ_n C B̄ Ā^l)``, shape ``(H, length)``."""
        dt_a, b_bar, c = self._discrete()
        powers = torch.exp(dt_a.unsqueeze(-1) * torch.arange(length, device=dt_a.device))
        return 2 * torch.einsum("hn,hnl->hl", c * b_bar, powers).real

    # -- SSM core (before the nonlinearity) ------------------------------------------------
    def ssm_conv(self, u: torch.Tensor) -> torch.Tensor:
        """Offline SSM from a zero state by FFT (size 2L, causal): ``(L, N, H) -> (L, N, H)``."""
        length = u.shape[0]
        if length == 0:
            return u
        k = self.kernel(length).to(u.dtype)  # (H, L)
        u_f = torch.fft.rfft(u.permute(1, 2, 0), n=2 * length)  # (N, H, L + 1)
        y = torch.fft.irfft(u_f * torch.fft.rfft(k, n=2 * length), n=2 * length)[..., :length]
        return y.permute(2, 0, 1) + u * self.D.to(u.dtype)

    def ssm_chunk(self, u: torch.Tensor, state: SSMState) -> tuple[torch.Tensor, SSMState]:
        """SSM over a chunk ``u (L, N, H)`` starting from ``state (N, H, modes)``.

        Closed form of L recurrence steps: the zero-state FFT convolution plus the decaying
        response to the incoming state; new state ``Ā^L s + Σ_l Ā^(L-1-l) B̄ u_l``.
        """
        length = u.shape[0]
        if length == 0:
            return u, state
        cdtype = state.dtype
        dt_a, b_bar, c = (t.to(cdtype) for t in self._discrete())
        steps = torch.arange(length + 1, device=u.device, dtype=u.dtype)
        powers = torch.exp(dt_a.unsqueeze(-1) * steps)  # (H, modes, L + 1): Ā^0 .. Ā^L
        carry = 2 * torch.einsum("hm,bhm,hml->lbh", c, state, powers[..., 1:]).real
        y = self.ssm_conv(u) + carry.to(u.dtype)
        driven = torch.einsum("hml,lbh->bhm", powers[..., :length].flip(-1), u.to(cdtype))
        return y, powers[..., length] * state + b_bar * driven

    def ssm_step(self, u_t: torch.Tensor, state: SSMState) -> tuple[torch.Tensor, SSMState]:
        """One recurrence step: ``u_t (N, H)``, ``state (N, H, modes)`` -> ``y_t (N, H)``."""
        dt_a, b_bar, c = (t.to(state.dtype) for t in self._discrete())
        state = torch.exp(dt_a) * state + b_bar * u_t.unsqueeze(-1)
        y = 2 * torch.einsum("hm,bhm->bh", c, state).real
        return y.to(u_t.dtype) + u_t * self.D.to(u_t.dtype), state

    # -- full layer ------------------------------------------------------------------------
    def _head(self, y: torch.Tensor) -> torch.Tensor:
        """GELU → tied dropout → 1×1 conv → GLU: ``(L, N, H) -> (L, N, H)``."""
        y = self.dropout(F.gelu(y))
        z = self.out_conv(y.permute(1, 2, 0))  # (N, 2H, L)
        return F.glu(z, dim=1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline (FFT) mode from a zero state: ``(L, N, H) -> (L, N, H)``."""
        if x.shape[0] == 0:  # Conv1d rejects empty sequences
            return x
        return self._head(self.ssm_conv(x))

    def initial_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> SSMState:
        """Zero complex state ``(N, H, modes)``; complex128 when ``dtype`` is float64."""
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.d_model, self.modes, dtype=cdtype, device=device)

    def step(self, x_t: torch.Tensor, state: SSMState) -> tuple[torch.Tensor, SSMState]:
        """Recurrent mode, one frame: ``x_t (N, H)`` -> ``(y_t (N, H), state)``."""
        y, state = self.ssm_step(x_t, state)
        return self._head(y.unsqueeze(0)).squeeze(0), state

    def forward_stream(self, x: torch.Tensor, state: SSMState) -> tuple[torch.Tensor, SSMState]:
        """Chunked recurrent mode: ``x (L, N, H)`` of any length, 0 included."""
        if x.shape[0] == 0:
            return x, state
        y, state = self.ssm_chunk(x, state)
        return self._head(y), state
