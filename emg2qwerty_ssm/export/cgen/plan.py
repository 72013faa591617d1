"""The float "plan" of a model's streaming step: folded weights as float32 NumPy arrays.

A plan is what the C generator and the int8 quantiser read instead of the ``EMGModel``: the
encoder's per-band MLP, the temporal convolutions with BatchNorm folded into them, and the S4D
blocks with their recurrence in real arithmetic. One step consumes ``stride`` raw samples
``(stride, bands, electrodes)`` and yields one frame of ``num_classes`` log-probabilities.

S4D in real arithmetic: the complex state ``s`` (per channel h and mode m) is replaced by
``s~ = 2 C s`` so that ``s~' = Ā s~ + (2 C B̄) u`` and ``y = Re(Σ_m s~) + D u``; each mode
needs ``Ā`` and ``W = 2 C B̄`` as (re, im) pairs, computed in float64 from the parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import nn

from emg2qwerty_ssm.models.backbones import S4DBackbone
from emg2qwerty_ssm.models.encoder import BandMLP, RotationInvariantEncoder, SparseReLU
from emg2qwerty_ssm.models.frontends import IdentityFrontend, TemporalConvFrontend
from emg2qwerty_ssm.models.model import EMGModel

SUPPORTED = (
    "encoder: RotationInvariantEncoder (raw input, offsets [0], norm layernorm|none, "
    "activation relu|sparse_relu)",
    "frontend: IdentityFrontend, TemporalConvFrontend (batchnorm|none, gelu)",
    "backbone: S4DBackbone",
)


class UnsupportedModelError(ValueError):
    """The model has a block the C generator does not implement."""


@dataclass
class Linear:
    """``y = weight @ x + bias``; ``weight (out, in)`` float32."""

    weight: np.ndarray
    bias: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.weight.shape[0]), int(self.weight.shape[1]))


@dataclass
class LayerNorm:
    gamma: np.ndarray
    beta: np.ndarray
    eps: float


@dataclass
class S4DBlock:
    """One residual block: S4D (recurrence + GELU + 1x1 conv + GLU), residual, pool, LayerNorm."""

    a_re: np.ndarray  # (H, M) Ā
    a_im: np.ndarray
    w_re: np.ndarray  # (H, M) 2 C B̄
    w_im: np.ndarray
    d: np.ndarray  # (H,)
    out_conv: Linear  # (2H, H)
    norm: LayerNorm
    pool: int
    frames_in: int  # frames per step entering this block


@dataclass
class FloatPlan:
    name: str
    stride: int  # raw samples per step
    bands: int
    electrodes: int
    input_pool: int
    enc_frames: int  # encoder frames per step
    enc_layers: list[list[tuple[Linear, LayerNorm | None]]]  # [band][layer], ReLU after each
    tc_layers: list[tuple[Linear, int]] = field(default_factory=list)  # (window->out, kernel), GELU
    bb_in: Linear | None = None
    blocks: list[S4DBlock] = field(default_factory=list)
    bb_out: Linear | None = None  # followed by GELU
    classifier: Linear | None = None
    params: int = 0

    @property
    def enc_features(self) -> int:
        return sum(layers[-1][0].shape[0] for layers in self.enc_layers)

    @property
    def num_classes(self) -> int:
        assert self.classifier is not None
        return self.classifier.shape[0]


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().double().numpy().astype(np.float32))


def _linear(module: nn.Linear) -> Linear:
    bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
    return Linear(_f32(module.weight), _f32(bias))


def _layernorm(module: nn.Module, where: str) -> LayerNorm | None:
    if isinstance(module, nn.Identity):
        return None
    if not isinstance(module, nn.LayerNorm) or not module.elementwise_affine:
        raise UnsupportedModelError(f"{where}: unsupported norm {type(module).__name__}")
    return LayerNorm(_f32(module.weight), _f32(module.bias), float(module.eps))


def _unsupported(where: str, module: nn.Module, detail: str = "") -> UnsupportedModelError:
    return UnsupportedModelError(
        f"C export: unsupported block {where} = {type(module).__name__}{detail}; "
        "supported: " + "; ".join(SUPPORTED)
    )


def _encoder(enc: nn.Module) -> tuple[list[list[tuple[Linear, LayerNorm | None]]], int]:
    if not isinstance(enc, RotationInvariantEncoder):
        raise _unsupported("model.encoder", enc)
    if list(enc.offsets) != [0]:
        raise _unsupported("model.encoder", enc, f" with offsets {enc.offsets} (only [0])")
    if enc.band_features != enc.electrodes:
        raise _unsupported("model.encoder", enc, " on spectrogram input (raw EMG only)")
    bands = []
    for b, band_mlp in enumerate(enc.mlps):
        mlp = cast(BandMLP, band_mlp)
        layers = []
        for j, (lin, norm, act) in enumerate(
            zip(mlp.linear_layers, mlp.norms, mlp.activations, strict=True)
        ):
            if not isinstance(act, nn.ReLU | SparseReLU):
                raise _unsupported(f"model.encoder.mlps.{b}.activations.{j}", act)
            inner = cast(nn.Module, norm.norm)
            if isinstance(inner, nn.BatchNorm1d):
                raise _unsupported(f"model.encoder.mlps.{b}.norms.{j}", inner)
            layers.append(
                (
                    _linear(cast(nn.Linear, lin)),
                    _layernorm(inner, f"model.encoder.mlps.{b}.norms.{j}"),
                )
            )
        bands.append(layers)
    return bands, enc.stride


def _frontend(fe: nn.Module) -> list[tuple[Linear, int]]:
    if isinstance(fe, IdentityFrontend):
        return []
    if not isinstance(fe, TemporalConvFrontend):
        raise _unsupported("model.frontend", fe)
    layers = []
    for i in range(0, len(fe.layers), 3):
        conv, norm = fe.layers[i], fe.layers[i + 1]
        assert isinstance(conv, nn.Conv1d)
        w = conv.weight.detach().double()  # (out, in, k)
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0])
        if isinstance(norm, nn.BatchNorm1d):  # eval-mode BN folds into the convolution
            assert norm.running_var is not None and norm.running_mean is not None
            g = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
            w = w * g[:, None, None]
            b = (b - norm.running_mean.double()) * g + norm.bias.detach().double()
        k = w.shape[2]
        # window (k, in) flattened time-major: weight (out, k, in)
        weight = w.permute(0, 2, 1).reshape(w.shape[0], k * w.shape[1])
        layers.append((Linear(_f32(weight), _f32(b)), k))
    return layers


def _s4d(bb: nn.Module, frames: int) -> tuple[Linear, list[S4DBlock], Linear]:
    if not isinstance(bb, S4DBackbone):
        raise _unsupported("model.backbone", bb)
    blocks = []
    for s4, _drop, norm, pool in bb._blocks():
        log_dt = s4.log_dt.detach().double()
        a = -torch.exp(s4.log_A_real.detach().double()) + 1j * s4.A_imag.detach().double()
        dt_a = a * torch.exp(log_dt).unsqueeze(-1)
        a_bar = torch.exp(dt_a)
        b_bar = (a_bar - 1.0) / a
        c = torch.view_as_complex(s4.C.detach().double().contiguous())
        w = 2.0 * c * b_bar
        ln = _layernorm(norm, "model.backbone.norms")
        assert ln is not None
        blocks.append(
            S4DBlock(
                _f32(a_bar.real),
                _f32(a_bar.imag),
                _f32(w.real),
                _f32(w.imag),
                _f32(s4.D),
                Linear(
                    _f32(s4.out_conv.weight[:, :, 0]), _f32(cast(torch.Tensor, s4.out_conv.bias))
                ),
                ln,
                pool,
                frames,
            )
        )
        frames //= pool
    return _linear(bb.encoder), blocks, _linear(bb.decoder)


def build_plan(model: EMGModel) -> FloatPlan:
    """Fold ``model`` (eval mode) into a :class:`FloatPlan`; unsupported blocks raise."""
    if model.input_kind != "raw":
        raise UnsupportedModelError(
            f"C export: model {model.name!r} takes {model.input_kind!r} input; only raw EMG "
            "is supported (" + "; ".join(SUPPORTED) + ")"
        )
    enc = model.encoder
    enc_layers, pool = _encoder(enc)
    assert isinstance(enc, RotationInvariantEncoder)
    tc = _frontend(model.frontend)
    enc_frames = model.stride // pool
    bb_in, blocks, bb_out = _s4d(model.backbone, enc_frames // math.prod(k for _, k in tc))
    return FloatPlan(
        name=model.name,
        stride=model.stride,
        bands=enc.bands,
        electrodes=enc.electrodes,
        input_pool=pool,
        enc_frames=enc_frames,
        enc_layers=enc_layers,
        tc_layers=tc,
        bb_in=bb_in,
        blocks=blocks,
        bb_out=bb_out,
        classifier=_linear(model.classifier),
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
