"""The S4D layer (docs/models.md#s4d-parameterisation): a diagonal complex state-space model
with fast eval and streaming paths.

Parameters and maths are the paper's (docs/models.md); what this module adds is speed:

* **Eval-mode tables.** With no gradient needed, the discretisation (``Ā``, ``B̄``, ``C``) and
  the per-chunk-length matrices below are computed once (in float64, then cast) and cached,
  keyed on the parameters' in-place version counters and storage, so an optimizer step,
  ``load_state_dict`` or ``.to()`` invalidates them; ``train()`` clears them.
* **Chunk matrix (short chunks).** ``L`` recurrence steps are linear in the chunk input and
  the state, so with the complex state stored as real pairs ``[Re s; Im s]`` one real matrix
  ``M_L (H, L + 2M, L + 2M)`` maps ``[u; s]`` to ``[y; s']`` (Toeplitz kernel + ``D`` on the
  diagonal, state read-out, input drive and ``Ā^L``): one batched matmul per chunk, no
  exponentials, no Python loop over time.
* **Chunked scan (long sequences).** Offline evaluation cuts ``L`` into blocks of ``B``,
  applies ``M_B``'s input columns to every block in one matmul, carries the state across
  blocks with one ``baddbmm`` per block and adds the state read-out in one more matmul: no
  ``H x modes x L`` exponentials (today's kernel materialised them, see
  ``s4d_reference.py``).
* **Training** keeps the FFT convolution, as one autograd function with a hand-written
  backward that reuses the forward's spectra and returns contiguous time-first tensors
  (``s4d_train.causal_conv``); its kernel is built from ``sqrt(L)``-sized blocks of powers
  (``Ā^(bB + i) = Ā^(bB) Ā^i``, one matmul) instead of ``H x modes x L`` exponentials, with a
  hand-written backward too, for all blocks of a backbone at once
  (:meth:`S4D.training_kernels`); the FFT always runs in float32 with autocast disabled
  (``torch.fft`` rejects bf16).

Tensors are time-first ``(L, N, H)``; the streaming state is the complex ``(N, H, modes)``
state (one step runs on it elementwise; chunks convert it to real pairs for the matrix).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from emg2qwerty_ssm.models import s4d_reference as ref
from emg2qwerty_ssm.models.s4d_train import causal_conv, stacked_kernels
from emg2qwerty_ssm.models.s4d_train import kernel as train_kernel

SSMState = torch.Tensor  # (N, H, modes) complex

#: chunks up to this many steps run through one chunk matrix; longer ones by the chunked scan
CHUNK_MATRIX_MAX = 64
#: block length of the chunked scan (measured against 32..512 and the FFT: docs/speed.md)
SCAN_BLOCK = 128
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class TiedDropout(nn.Module):
    """Dropout with one mask per (batch, channel), shared over time ("DropoutNd, tied").

    Input ``(L, N, C)``; identity in eval mode.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The scaled mask ``keep / (1 - p)`` of shape ``(1, N, C)`` for ``x``, None when
        dropout is off: callers fuse ``x * mask`` into a neighbouring operation."""
        if not self.training or self.p == 0.0:
            return None
        keep = torch.rand(1, *x.shape[1:], device=x.device) >= self.p
        return keep.to(x.dtype).div_(1.0 - self.p)  # scaled on the small mask: one op on x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask(x)
        return x if mask is None else x * mask


@dataclass
class _Tables:
    """Discretisation and chunk matrices of one parameter version (all ``(H, ...)``)."""

    key: tuple
    dtype: torch.dtype  # real dtype of the layer's parameters
    dt_a: torch.Tensor  # (H, M) complex128
    b_bar: torch.Tensor  # (H, M) complex128
    c: torch.Tensor  # (H, M) complex128
    d: torch.Tensor  # (H,) float64
    a_bar: torch.Tensor  # (H, M) complex, layer precision
    b_bar_c: torch.Tensor  # (H, M) complex, layer precision
    c_read: torch.Tensor  # (H, M, 2) real: (2 Re C, -2 Im C), layer precision
    d_c: torch.Tensor  # (H,) layer precision
    chunk: dict[int, torch.Tensor] = field(default_factory=dict)  # L -> (H, L+2M, L+2M)
    scan: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)  # B -> parts

    def scan_parts(self, block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Contiguous parts of ``M_B`` for the scan: input columns ``(H, B + 2M, B)``, state
        transition ``Ā^B`` on real pairs ``(H, 2M, 2M)``, state read-out ``(H, B, 2M)``."""
        parts = self.scan.get(block)
        if parts is None:
            m = self.chunk_matrix(block)
            parts = tuple(
                p.contiguous()
                for p in (m[:, :, :block], m[:, block:, block:], m[:, :block, block:])
            )
            self.scan[block] = parts
        return parts  # type: ignore[return-value]

    def chunk_matrix(self, length: int) -> torch.Tensor:
        """``M_L``: ``[y (L); Re s' (M); Im s' (M)] = M_L @ [u (L); Re s (M); Im s (M)]``."""
        m = self.chunk.get(length)
        if m is None:
            if len(self.chunk) >= 16:  # odd chunk sizes: keep the cache bounded
                self.chunk.clear()
            m = _chunk_matrix(self.dt_a, self.b_bar, self.c, self.d, length).to(self.dtype)
            self.chunk[length] = m
        return m


def _chunk_matrix(
    dt_a: torch.Tensor, b_bar: torch.Tensor, c: torch.Tensor, d: torch.Tensor, length: int
) -> torch.Tensor:
    """Build ``M_L`` in float64 from complex128 ``dt_a, b_bar, c (H, M)`` and ``d (H,)``."""
    h, m = dt_a.shape
    k = torch.arange(length + 1, dtype=torch.float64, device=dt_a.device)
    powers = torch.exp(dt_a.unsqueeze(-1) * k)  # (H, M, L + 1): Ā^0 .. Ā^L
    kern = 2 * torch.einsum("hm,hml->hl", c * b_bar, powers[..., :length]).real  # (H, L)
    lag = torch.arange(length).unsqueeze(1) - torch.arange(length).unsqueeze(0)  # l - j
    toeplitz = torch.where(lag >= 0, kern[:, lag.clamp(min=0)], torch.zeros((), dtype=kern.dtype))
    toeplitz = toeplitz + torch.diag_embed(d.unsqueeze(-1).expand(h, length))
    read = c.unsqueeze(1) * powers[..., 1:].transpose(1, 2)  # (H, L, M): C Ā^(l+1)
    drive = b_bar.unsqueeze(-1) * powers[..., :length].flip(-1)  # (H, M, L): B̄ Ā^(L-1-j)
    a_l = powers[..., length]  # (H, M)
    out = torch.zeros(h, length + 2 * m, length + 2 * m, dtype=torch.float64, device=dt_a.device)
    out[:, :length, :length] = toeplitz
    out[:, :length, length : length + m] = 2 * read.real
    out[:, :length, length + m :] = -2 * read.imag
    out[:, length : length + m, :length] = drive.real
    out[:, length + m :, :length] = drive.imag
    eye = torch.eye(m, dtype=torch.float64, device=dt_a.device)
    out[:, length : length + m, length : length + m] = eye * a_l.real.unsqueeze(-1)
    out[:, length : length + m, length + m :] = -eye * a_l.imag.unsqueeze(-1)
    out[:, length + m :, length : length + m] = eye * a_l.imag.unsqueeze(-1)
    out[:, length + m :, length + m :] = eye * a_l.real.unsqueeze(-1)
    return out


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def _autocast_on(device: torch.device) -> bool:
    """Entering ``torch.autocast(enabled=False)`` costs ~3 small ops: only do it when needed."""
    return torch.is_autocast_enabled(device.type)


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
        self._tables: _Tables | None = None

    def optim_hints(self) -> dict[str, dict[str, float]]:
        """``{parameter name: optimizer hint}``; kept here too because ``deepcopy`` of a
        Parameter drops attributes such as ``_optim``."""
        hint: dict[str, float] = {"weight_decay": 0.0}
        if self.ssm_lr is not None:
            hint["lr"] = self.ssm_lr
        return {name: dict(hint) for name in ("log_dt", "log_A_real", "A_imag")}

    def train(self, mode: bool = True) -> S4D:
        self._tables = None  # parameters are about to change
        return super().train(mode)

    # -- discretisation (zero-order hold) --------------------------------------------------
    def _discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``dt·A``, ``B̄ = (Ā - 1) / A`` and complex ``C``, each ``(H, modes)``."""
        return ref.discrete(self)

    def _ssm_params(self) -> tuple[torch.Tensor, ...]:
        return (self.log_dt, self.log_A_real, self.A_imag, self.C, self.D)

    def _cacheable(self) -> bool:
        """Tables may be cached when no gradient flows to the SSM parameters."""
        return not torch.is_grad_enabled() or not any(p.requires_grad for p in self._ssm_params())

    def tables(self) -> _Tables:
        """The eval-mode tables, rebuilt when a parameter changed (version, storage, dtype)."""
        params = self._ssm_params()
        key = tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in params)
        t = self._tables
        if t is not None and t.key == key:
            return t
        with torch.no_grad(), _no_autocast(self.D.device):
            log_dt, log_a_real, a_imag, c, d = (p.detach().double() for p in params)
            a = torch.complex(-torch.exp(log_a_real), a_imag)
            dt_a = a * torch.exp(log_dt).unsqueeze(-1)
            b_bar = (torch.exp(dt_a) - 1.0) / a
            c = torch.view_as_complex(c.contiguous())
            cdtype = torch.complex128 if self.D.dtype == torch.float64 else torch.complex64
            t = _Tables(
                key, self.D.dtype, dt_a, b_bar, c, d,
                torch.exp(dt_a).to(cdtype), b_bar.to(cdtype),
                torch.stack([2 * c.real, -2 * c.imag], dim=-1).to(self.D.dtype),
                d.to(self.D.dtype),
            )  # fmt: skip
        self._tables = t
        return t

    def kernel(self, length: int) -> torch.Tensor:
        """Convolution kernel ``K[h, l] = 2 Re(Σ_n C B̄ Ā^l)``, shape ``(H, length)``.

        Built from blocks of powers, ``Ā^(bB + i) = Ā^(bB) · Ā^i`` with ``B ≈ sqrt(L)``: the
        ``H x modes x L`` products are one matmul instead of as many complex exponentials;
        the backward pass is written by hand (``s4d_train.kernel``). Differentiable; float32
        even under autocast.
        """
        if ref.is_active():
            return ref.kernel(self, length)
        if _autocast_on(self.D.device):
            with _no_autocast(self.D.device):
                return self.kernel(length)
        return train_kernel(self.log_dt, self.log_A_real, self.A_imag, self.C, length)

    @staticmethod
    def training_kernels(
        layers: Sequence[S4D], lengths: Sequence[int]
    ) -> list[torch.Tensor | None]:
        """The kernels of several layers for the training path (``layers[i]`` at
        ``lengths[i]``), computed together: one kernel computation per distinct length on
        the layers' parameters stacked along the channels, instead of one per layer (the
        kernel is ~50 operators on ``(H, modes)`` tensors, whose per-operator cost dominates
        at these sizes). None for a layer that does not take the training FFT path."""
        out: list[torch.Tensor | None] = [None] * len(layers)
        if ref.is_active():
            return out
        groups: dict[tuple, list[int]] = {}
        for i, (layer, length) in enumerate(zip(layers, lengths, strict=True)):
            if length > 0 and not layer._cacheable():
                key = (length, layer.modes, layer.D.dtype, layer.D.device)
                groups.setdefault(key, []).append(i)
        for (length, *_), members in groups.items():
            params = [
                (layers[i].log_dt, layers[i].log_A_real, layers[i].A_imag, layers[i].C)
                for i in members
            ]
            with _no_autocast(layers[members[0]].D.device):
                for i, k in zip(members, stacked_kernels(params, length), strict=True):
                    out[i] = k
        return out

    # -- SSM core (before the nonlinearity) ------------------------------------------------
    def ssm_conv(self, u: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Offline SSM from a zero state: ``(L, N, H) -> (L, N, H)``.

        Without gradients: the cached chunk matrix / chunked scan; with gradients: the causal
        FFT convolution of ``s4d_train`` in float32 (autocast off; the result is float32 for a
        bf16/fp16 input), with ``kernel`` (``(H, L)``, from :meth:`training_kernels`) or
        this layer's own :meth:`kernel`.
        """
        length = u.shape[0]
        if length == 0:
            return u
        if ref.is_active():
            return ref.ssm_conv(self, u)
        if self._cacheable():
            zero = u.new_zeros(self.d_model, 2 * self.modes, u.shape[1])
            return self._ssm_real(u, zero)[0]
        if _autocast_on(u.device):
            with _no_autocast(u.device):
                return self.ssm_conv(u.float(), kernel)
        work = u.float() if u.dtype in _LOW_PRECISION else u
        k = self.kernel(length) if kernel is None else kernel
        return torch.addcmul(causal_conv(work, k.to(work.dtype)), work, self.D.to(work.dtype))

    def _ssm_real(self, u: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunk ``u (L, N, H)`` from the real-pair state ``s (H, 2M, N)``; no gradients."""
        tables = self.tables()
        if _autocast_on(u.device):
            with _no_autocast(u.device):
                return self._ssm_real(u.float(), s.float())
        u = u.to(tables.dtype)
        s = s.to(tables.dtype)
        if u.shape[0] <= CHUNK_MATRIX_MAX:
            return self._matrix_chunk(tables, u, s)
        return self._scan(tables, u, s)

    @staticmethod
    def _matrix_chunk(
        tables: _Tables, u: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[y; s'] = M_L [u; s]`` for one chunk: ``u (L, N, H)``, ``s (H, 2M, N)``."""
        length = u.shape[0]
        m = tables.chunk_matrix(length)
        x = torch.cat([u.permute(2, 0, 1), s], dim=1)  # (H, L + 2M, N)
        # batch 1: a broadcast product beats CPU bmm's batched gemv (measured ~3x)
        batch_one = x.shape[-1] == 1
        out = (m * x.transpose(1, 2)).sum(-1, keepdim=True) if batch_one else torch.bmm(m, x)
        return out[:, :length].permute(1, 2, 0), out[:, length:]

    def _scan(
        self, tables: _Tables, u: torch.Tensor, s: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunked scan over ``L > CHUNK_MATRIX_MAX`` steps (see the module docstring)."""
        length, batch, h = u.shape
        block = SCAN_BLOCK
        n_blocks = length // block
        full = n_blocks * block
        if n_blocks == 0:
            return self._matrix_chunk(tables, u, s)
        m_in, decay, read = tables.scan_parts(block)
        # (nb, B, N, H) -> (H, B, nb * N): every block a column group of one matmul
        blocks = u[:full].reshape(n_blocks, block, batch, h).permute(3, 1, 0, 2)
        blocks = blocks.reshape(h, block, n_blocks * batch)
        local = torch.bmm(m_in, blocks)  # (H, B + 2M, nb * N): y_local; drive
        local = local.reshape(h, block + 2 * self.modes, n_blocks, batch)
        starts = torch.empty(n_blocks, h, 2 * self.modes, batch, dtype=u.dtype, device=u.device)
        for b in range(n_blocks):
            starts[b] = s
            s = torch.baddbmm(local[:, block:, b], decay, s)
        # state read-out of every block at once: (H, B, 2M) @ (H, 2M, nb * N)
        starts = starts.permute(1, 2, 0, 3).reshape(h, 2 * self.modes, n_blocks * batch)
        y = torch.baddbmm(local[:, :block].reshape(h, block, n_blocks * batch), read, starts)
        y = y.reshape(h, block, n_blocks, batch).permute(2, 1, 3, 0).reshape(full, batch, h)
        if full == length:
            return y, s
        rest, s = self._matrix_chunk(tables, u[full:], s)
        return torch.cat([y, rest], dim=0), s

    @staticmethod
    def complex_to_real(state: SSMState) -> torch.Tensor:
        """Complex ``(N, H, M)`` -> real pairs ``(H, 2M, N)`` (``[Re s; Im s]`` per channel)."""
        pairs = torch.view_as_real(state)  # (N, H, M, 2)
        return pairs.permute(1, 3, 2, 0).reshape(state.shape[1], -1, state.shape[0])

    @staticmethod
    def real_to_complex(s: torch.Tensor) -> SSMState:
        """Real pairs ``(H, 2M, N)`` -> complex ``(N, H, M)``."""
        h, two_m, n = s.shape
        pairs = s.reshape(h, 2, two_m // 2, n).permute(3, 0, 2, 1).contiguous()
        return torch.view_as_complex(pairs)

    def ssm_chunk(self, u: torch.Tensor, state: SSMState) -> tuple[torch.Tensor, SSMState]:
        """SSM over a chunk ``u (L, N, H)`` starting from ``state (N, H, modes)``.

        Same result as ``L`` recurrence steps; new state ``Ā^L s + Σ_l Ā^(L-1-l) B̄ u_l``.
        One step runs elementwise, short chunks through the chunk matrix, long ones by the
        chunked scan (eval tables); with gradients, the reference closed form.
        """
        if u.shape[0] == 0:
            return u, state
        if ref.is_active() or not self._cacheable():
            return ref.ssm_chunk(self, u, state)
        if u.shape[0] == 1:
            y, state = self.ssm_step(u[0], state)
            return y.unsqueeze(0), state
        y, s = self._ssm_real(u, self.complex_to_real(state))
        return y.to(u.dtype), self.real_to_complex(s).to(state.dtype)

    def ssm_step(self, u_t: torch.Tensor, state: SSMState) -> tuple[torch.Tensor, SSMState]:
        """One recurrence step: ``u_t (N, H)``, ``state (N, H, modes)`` -> ``y_t (N, H)``."""
        if ref.is_active() or not self._cacheable():
            return ref.ssm_step(self, u_t, state)
        t = self.tables()
        if state.dtype != t.a_bar.dtype:
            return ref.ssm_step(self, u_t, state)
        if _autocast_on(u_t.device):
            with _no_autocast(u_t.device):
                return self._step_tables(t, u_t, state)
        return self._step_tables(t, u_t, state)

    @staticmethod
    def _step_tables(
        t: _Tables, u_t: torch.Tensor, state: SSMState
    ) -> tuple[torch.Tensor, SSMState]:
        u = u_t.to(t.dtype)
        state = torch.addcmul(t.a_bar * state, t.b_bar_c, u.unsqueeze(-1))
        # 2 Re(Σ C s) + D u as one real product over (mode, re/im) pairs
        y = (torch.view_as_real(state) * t.c_read).sum((-1, -2))
        y = torch.addcmul(y, u, t.d_c)
        return y.to(u_t.dtype), state

    # -- full layer ------------------------------------------------------------------------
    def _head(self, y: torch.Tensor) -> torch.Tensor:
        """GELU → tied dropout → 1×1 conv → GLU: ``(L, N, H) -> (L, N, H)``."""
        y = self.dropout(F.gelu(y))
        if ref.is_active():
            z = self.out_conv(y.permute(1, 2, 0))  # (N, 2H, L)
            return F.glu(z, dim=1).permute(2, 0, 1)
        # the 1x1 convolution as a Linear on time-first frames: no permutes, same weights
        z = F.linear(y, self.out_conv.weight.squeeze(-1), self.out_conv.bias)
        return F.glu(z, dim=-1)

    def forward(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """Offline mode from a zero state: ``(L, N, H) -> (L, N, H)``; ``kernel``: this layer's
        training kernel when computed beforehand (:meth:`training_kernels`)."""
        if x.shape[0] == 0:  # Conv1d rejects empty sequences
            return x
        return self._head(self.ssm_conv(x, kernel))

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
