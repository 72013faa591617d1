"""High-frequency front-ends (the paper's "HF feature extractors"): identity and temporal conv.

Front-ends take ``(T, N, in_features)`` at the encoder rate (500 Hz for the paper's models)
and reduce it to the backbone rate. GRU / EGRU front-ends live in ``recurrent.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from emg2qwerty_ssm.models import s4d_reference as ref
from emg2qwerty_ssm.models.base import State, StreamingModule
from emg2qwerty_ssm.models.cost import BlockCost, conv_cost, norm_cost


class _StackFrames(torch.autograd.Function):
    """``x[:t] (t, N, C) -> (t / s, N, s * C)``: ``s`` consecutive frames side by side."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, s: int, t: int) -> torch.Tensor:  # noqa: D102
        _, n, c = x.shape
        ctx.shape, ctx.s, ctx.t = x.shape, s, t
        return x[:t].reshape(t // s, s, n, c).transpose(1, 2).reshape(t // s, n, s * c)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        length, n, c = ctx.shape
        s, t = ctx.s, ctx.t
        # one strided copy into the input's layout; autograd's view chain would copy the
        # un-permuted gradient, then zero-fill all frames and copy it again for the slice
        out = grad.new_empty(length, n, c)
        out[:t].view(t // s, s, n, c).copy_(grad.view(t // s, n, s, c).transpose(1, 2))
        out[t:].zero_()
        return out, None, None


def stack_frames(x: torch.Tensor, s: int, t: int) -> torch.Tensor:
    """The first ``t`` frames of ``x (T, N, C)`` (``t`` a multiple of ``s``) as
    ``(t / s, N, s * C)``, each output frame its ``s`` input frames in time order."""
    if t % s or t > x.shape[0]:
        raise ValueError(f"stack_frames: t={t} must be a multiple of s={s} and <= {x.shape[0]}")
    return _StackFrames.apply(x, s, t)


class IdentityFrontend(StreamingModule):
    """No front-end: ``(T, N, C) -> (T, N, C)``, stride 1."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.in_features = self.out_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_stream(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return x, None

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        return []


class TemporalConvFrontend(StreamingModule):
    """Strided temporal convolutions: ``[Conv1d(k = s) → BatchNorm1d → GELU]`` per layer.

    ``(T, N, in_features) -> (T // prod(strides), N, out_channels[-1])``. Every kernel equals
    its stride (no padding), so output frame k sees exactly input frames
    ``[k·R, (k+1)·R)``: the stage is block-local and streams with the base class's buffer.
    ``layers`` keeps the seed's module indices (conv 0, BN 1, GELU 2, conv 3, ...).
    """

    def __init__(
        self,
        in_features: int,
        out_channels: Sequence[int] = (96, 192, 150),
        strides: Sequence[int] = (4, 3, 2),
        kernel_sizes: Sequence[int] | None = None,
        norm: str = "batchnorm",
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        kernel_sizes = list(kernel_sizes) if kernel_sizes is not None else list(strides)
        if not (len(out_channels) == len(strides) == len(kernel_sizes)) or not out_channels:
            raise ValueError(
                f"frontend.out_channels {list(out_channels)}, strides {list(strides)} and "
                f"kernel_sizes {kernel_sizes} must be non-empty lists of the same length"
            )
        if list(kernel_sizes) != list(strides):
            raise ValueError(
                f"frontend.kernel_sizes {kernel_sizes} must equal strides {list(strides)}: "
                "only kernel = stride convolutions are block-local (causal, streamable)"
            )
        if norm not in ("batchnorm", "none"):
            raise ValueError(f"frontend.norm must be 'batchnorm' or 'none', got {norm!r}")
        if activation != "gelu":
            raise ValueError(f"frontend.activation must be 'gelu', got {activation!r}")
        layers: list[nn.Module] = []
        sizes = [in_features, *out_channels]
        for c_in, c_out, s in zip(sizes, sizes[1:], strides, strict=False):
            layers.append(nn.Conv1d(c_in, c_out, kernel_size=s, stride=s))
            layers.append(nn.BatchNorm1d(c_out) if norm == "batchnorm" else nn.Identity())
            layers.append(nn.GELU())
        self.layers = nn.Sequential(*layers)
        self.strides = list(strides)
        self.stride = math.prod(self.strides)
        self.in_features, self.out_features = in_features, sizes[-1]
        self._folded_cache: tuple[tuple, list] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0] // self.stride * self.stride  # Conv1d would drop the remainder anyway
        if t == 0:  # Conv1d rejects inputs shorter than its kernel
            return x.new_zeros(0, x.shape[1], self.out_features)
        if ref.is_active():
            return self.layers(x[:t].permute(1, 2, 0)).permute(2, 0, 1)
        if not self.training and not torch.is_grad_enabled():
            return self._forward_folded(x[:t])
        return self._forward_linear(x, t)

    def _forward_linear(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """The conv stack as Linears over ``s`` stacked frames (training; BatchNorm over all
        batch x time positions, exactly as BatchNorm1d on ``(N, C, T)``), on the first ``t``
        frames of ``x``. Frames are stacked time-major ``(s, C)`` per output frame (rows of
        ``C`` contiguous floats to copy) and each weight ``(C_out, C, s)`` is reordered to
        match; ``stack_frames`` trims and stacks in one copy each way."""
        for i in range(0, len(self.layers), 3):
            conv = cast(nn.Conv1d, self.layers[i])
            norm, act = self.layers[i + 1], self.layers[i + 2]
            s = conv.stride[0]
            frames = stack_frames(x, s, t)
            weight = conv.weight.transpose(1, 2).reshape(conv.out_channels, -1)
            y = F.linear(frames, weight, conv.bias)
            if isinstance(norm, nn.BatchNorm1d):
                y = norm(y.reshape(-1, y.shape[-1])).reshape(y.shape)
            x, t = act(y), y.shape[0]
        return x

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """Eval fast path: each kernel = stride conv as a Linear on ``s`` stacked frames with
        the eval BatchNorm folded in (same maths as the conv stack, no conv im2col)."""
        for weight, bias, s in self._folded_layers():
            t, n, c = x.shape
            frames = x.reshape(t // s, s, n, c).permute(0, 2, 3, 1).reshape(t // s, n, c * s)
            x = F.gelu(F.linear(frames, weight, bias))
        return x

    def _folded_layers(self) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """``(weight (C_out, C_in * s), bias, s)`` per layer, cached per parameter version."""
        tensors = [*self.parameters(), *self.buffers()]
        key = tuple((p._version, p.data_ptr()) for p in tensors)
        if self._folded_cache is not None and self._folded_cache[0] == key:
            return self._folded_cache[1]
        layers = []
        with torch.no_grad():
            for i in range(0, len(self.layers), 3):
                conv, norm = cast(nn.Conv1d, self.layers[i]), self.layers[i + 1]
                weight = conv.weight.reshape(conv.out_channels, -1)
                bias = conv.bias if conv.bias is not None else weight.new_zeros(weight.shape[0])
                if isinstance(norm, nn.BatchNorm1d):
                    assert norm.running_mean is not None and norm.running_var is not None
                    scale = torch.rsqrt(norm.running_var + norm.eps)
                    if norm.weight is not None:
                        scale = scale * norm.weight
                    shift = -norm.running_mean * scale
                    if norm.bias is not None:
                        shift = shift + norm.bias
                    weight, bias = weight * scale.unsqueeze(-1), bias * scale + shift
                layers.append((weight.contiguous(), bias.contiguous(), conv.stride[0]))
        self._folded_cache = (key, layers)
        return layers

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        costs, rate = [], input_rate_hz
        for i in range(0, len(self.layers), 3):
            conv, norm = cast(nn.Conv1d, self.layers[i]), self.layers[i + 1]
            costs.append(conv_cost(f"layers.{i}", conv, rate))
            rate = costs[-1].output_rate_hz
            # BatchNorm folds into the conv: parameters but no MACs
            norm_block = norm_cost(f"layers.{i + 1}", norm, rate, conv.out_channels)
            costs += [norm_block] if norm_block else []
        return costs
