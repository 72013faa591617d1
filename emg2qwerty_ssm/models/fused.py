"""Fused streaming engine: the whole model's eval-mode step in NumPy, no per-op dispatch.

At 48 ms chunks TC_S4_small does ~0.65 M MAC per chunk, microseconds of arithmetic; through
PyTorch the step is ~150 small operators whose dispatch (several µs each) is the whole cost.
This engine runs the same maths on NumPy arrays prepared once per parameter version (weights
transposed, eval BatchNorm folded into the TC convolutions, S4D's cached discretisation and
chunk matrices), where a small operator costs ~1 µs. It covers the paper's architectures
(rotation-invariant MLP encoder with one view, identity or TC front-end, S4D backbone);
:func:`supports` says whether a model qualifies, otherwise ``EMGModel`` streams through its
stages. ``tests/test_fast_paths.py`` checks it against the offline reference within 1e-5.
Shapes are time-first: a chunk ``(T, N, bands, electrodes)`` -> ``(T', N, classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from scipy.special import erf, expit
from torch import nn

from emg2qwerty_ssm.models.backbones import S4DBackbone
from emg2qwerty_ssm.models.encoder import RotationInvariantEncoder, SparseReLU
from emg2qwerty_ssm.models.frontends import IdentityFrontend, TemporalConvFrontend
from emg2qwerty_ssm.models.s4d import S4D

if TYPE_CHECKING:
    from emg2qwerty_ssm.models.model import EMGModel

_SQRT_HALF = np.float32(1.0 / np.sqrt(2.0))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _bias(layer: nn.Conv1d | nn.Linear) -> torch.Tensor:
    """The layer's bias (the fused step mirrors layers built with one)."""
    if layer.bias is None:
        raise ValueError(f"fused path: {layer} has no bias; expected one")
    return layer.bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x * _SQRT_HALF))


_sum = np.add.reduce  # the ufunc itself: np.mean / np.sum add a Python wrapper per call


def _layer_norm(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, eps: float):  # noqa: ANN202
    inv_n = np.float32(1.0 / x.shape[-1])
    xc = x - _sum(x, axis=-1, keepdims=True) * inv_n
    y = xc / np.sqrt(_sum(xc * xc, axis=-1, keepdims=True) * inv_n + np.float32(eps))
    if w is not None:
        y = y * w
    return y + b if b is not None else y


def supports(model: EMGModel) -> bool:
    """True when every stage is one this engine implements (float32 CPU parameters)."""
    enc, front, back = model.encoder, model.frontend, model.backbone
    if not isinstance(enc, RotationInvariantEncoder) or enc.offsets != [0]:
        return False
    if enc.band_features != enc.electrodes or enc.norm_kind not in ("layernorm", "none"):
        return False
    for mlp in enc.mlps:
        if not all(isinstance(a, (nn.ReLU, SparseReLU)) for a in mlp.activations):  # type: ignore[union-attr]
            return False
    if not isinstance(front, (IdentityFrontend, TemporalConvFrontend)):
        return False
    if not isinstance(back, S4DBackbone):
        return False
    return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())


@dataclass
class FusedState:
    """Streaming state of the fused engine (opaque to callers, like every model state)."""

    raw: np.ndarray  # (r, N, bands, electrodes) samples awaiting an encoder pool
    frames: np.ndarray  # (r, N, C) encoder frames awaiting a front-end block
    ssm: list[np.ndarray]  # per S4D block: complex state (N, H, modes)
    pooled: list[np.ndarray]  # per S4D block: (r, N, H) frames awaiting the end pool
    batch: int


@dataclass
class _Block:
    s4: S4D
    a_bar: np.ndarray
    b_bar: np.ndarray
    c_read: np.ndarray
    d: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray
    ln: tuple[np.ndarray | None, np.ndarray | None, float]
    pool: int
    matrices: dict[int, np.ndarray] = field(default_factory=dict)

    def matrix(self, length: int) -> np.ndarray:
        m = self.matrices.get(length)
        if m is None:
            if len(self.matrices) >= 16:  # irregular chunk sizes: keep the cache bounded
                self.matrices.clear()
            m = self.matrices[length] = _np(self.s4.tables().chunk_matrix(length))
        return m


class FusedPlan:
    """NumPy copies of one parameter version of ``model`` and the fused step."""

    def __init__(self, model: EMGModel) -> None:
        self.tensors = [*model.parameters(), *model.buffers()]
        self.key = plan_key(self.tensors)
        enc = cast(RotationInvariantEncoder, model.encoder)
        self.pool_in, self.bands, self.electrodes = enc.stride, enc.bands, enc.electrodes
        self.encoder: list[list[tuple[np.ndarray, np.ndarray, Any]]] = []
        with torch.no_grad():
            for mlp in enc.mlps:
                layers = []
                for lin, norm in zip(mlp.linear_layers, mlp.norms, strict=True):  # type: ignore[arg-type]
                    inner = norm.norm
                    ln = None
                    if isinstance(inner, nn.LayerNorm):
                        w = _np(inner.weight) if inner.weight is not None else None
                        b = _np(inner.bias) if inner.bias is not None else None
                        ln = (w, b, inner.eps)
                    layers.append((_np(lin.weight).T.copy(), _np(lin.bias), ln))
                self.encoder.append(layers)
            front = model.frontend
            self.front_stride = front.stride
            self.front: list[tuple[np.ndarray, np.ndarray, int]] = []
            if isinstance(front, TemporalConvFrontend):
                self.front = [(_np(w).T.copy(), _np(b), s) for w, b, s in front._folded_layers()]
            back = cast(S4DBackbone, model.backbone)
            self.back_in = (_np(back.encoder.weight).T.copy(), _np(back.encoder.bias))
            self.blocks = []
            for s4, _, norm, p in back._blocks():
                t = s4.tables()
                w_out = _np(s4.out_conv.weight.squeeze(-1)).T.copy()
                ln_w = _np(norm.weight) if norm.weight is not None else None
                ln_b = _np(norm.bias) if norm.bias is not None else None
                self.blocks.append(
                    _Block(
                        s4,
                        _np(t.a_bar),
                        _np(t.b_bar_c),
                        _np(t.c_read).reshape(s4.d_model, -1),
                        _np(t.d_c),
                        w_out,
                        _np(_bias(s4.out_conv)),
                        (ln_w, ln_b, norm.eps),
                        p,
                    )  # fmt: skip
                )
            self.back_out = (_np(back.decoder.weight).T.copy(), _np(back.decoder.bias))
            self.classifier = (_np(model.classifier.weight).T.copy(), _np(model.classifier.bias))
        self.h = back.d_model
        self.modes = self.blocks[0].s4.modes if self.blocks else 0
        self.num_classes = model.classifier.out_features

    def initial_state(self, batch: int) -> FusedState:
        z = np.zeros
        return FusedState(
            raw=z((0, batch, self.bands, self.electrodes), np.float32),
            frames=z((0, batch, self.encoder[0][-1][0].shape[1] * self.bands), np.float32),
            ssm=[z((batch, self.h, self.modes), np.complex64) for _ in self.blocks],
            pooled=[z((0, batch, self.h), np.float32) for _ in self.blocks],
            batch=batch,
        )

    def step(self, chunk: np.ndarray, state: FusedState) -> np.ndarray:
        """Consume ``chunk (T, N, bands, electrodes)``; return ``(T', N, classes)`` log-probs.

        ``state``'s fields are replaced, never written into, so a shallow copy branches it.
        """
        if chunk.shape[2:] != (self.bands, self.electrodes) or chunk.shape[1] != state.batch:
            raise ValueError(
                f"encoder expects input (T, {state.batch}, {self.bands}, {self.electrodes}), "
                f"got {tuple(chunk.shape)}"
            )
        x = np.concatenate([state.raw, chunk]) if state.raw.shape[0] else chunk
        p = self.pool_in
        usable = x.shape[0] // p * p
        state.raw = x[usable:].copy()
        if usable == 0:
            return self._empty(state.batch)
        x = x[:usable].reshape(usable // p, p, *x.shape[1:]).mean(1) if p > 1 else x[:usable]
        bands = []
        for b, layers in enumerate(self.encoder):
            h = x[:, :, b]
            for w, bias, ln in layers:
                h = h @ w + bias
                if ln is not None:
                    h = _layer_norm(h, *ln)
                h = np.maximum(h, 0.0)
            bands.append(h)
        x = np.concatenate(bands, axis=-1)
        if state.frames.shape[0]:
            x = np.concatenate([state.frames, x])
        usable = x.shape[0] // self.front_stride * self.front_stride
        state.frames = x[usable:].copy()
        if usable == 0:
            return self._empty(state.batch)
        x = x[:usable]
        for w, bias, s in self.front:
            t, n, c = x.shape
            x = _gelu(
                x.reshape(t // s, s, n, c).transpose(0, 2, 3, 1).reshape(t // s, n, c * s) @ w
                + bias
            )
        x = x @ self.back_in[0] + self.back_in[1]
        for i, blk in enumerate(self.blocks):
            x = self._block(blk, x, state, i)
            if x.shape[0] == 0:
                return self._empty(state.batch)
        x = _gelu(x @ self.back_out[0] + self.back_out[1])
        logits = x @ self.classifier[0] + self.classifier[1]
        shifted = logits - logits.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    def _block(self, blk: _Block, x: np.ndarray, state: FusedState, i: int) -> np.ndarray:
        """One residual S4D block on ``x (L, N, H)``: SSM, GELU, 1x1 conv, GLU, add, pool, LN."""
        length, n, h = x.shape
        s = state.ssm[i]
        if length == 1:
            u = x[0]
            s = blk.a_bar * s + blk.b_bar * u[..., None]
            y = (_sum(s.view(np.float32) * blk.c_read, axis=-1) + blk.d * u)[None]
        else:
            m = self.modes
            pairs = np.concatenate([s.real, s.imag], axis=-1).transpose(1, 2, 0)  # (H, 2M, N)
            out = np.matmul(blk.matrix(length), np.concatenate([x.transpose(2, 0, 1), pairs], 1))
            y = out[:, :length].transpose(1, 2, 0)
            s = (out[:, length : length + m] + 1j * out[:, length + m :]).transpose(2, 0, 1)
            s = np.ascontiguousarray(s, dtype=np.complex64)
        state.ssm[i] = s
        z = _gelu(y) @ blk.w_out + blk.b_out
        x = z[..., :h] * expit(z[..., h:]) + x
        if blk.pool > 1:
            if state.pooled[i].shape[0]:
                x = np.concatenate([state.pooled[i], x])
            usable = x.shape[0] // blk.pool * blk.pool
            state.pooled[i] = x[usable:].copy()
            x = _sum(x[:usable].reshape(usable // blk.pool, blk.pool, n, h), axis=1)
            x = x * np.float32(1.0 / blk.pool)
        return _layer_norm(x, *blk.ln)

    def _empty(self, batch: int) -> np.ndarray:
        return np.zeros((0, batch, self.num_classes), np.float32)


def plan_key(tensors: list[torch.Tensor]) -> list[int]:
    """Changes whenever one of ``tensors`` (the model's parameters and buffers) is updated in
    place (version counter) or gets new storage (``.data =``, ``.to()``)."""
    return [v for t in tensors for v in (t._version, t.data_ptr())]
