"""The emg2qwerty TDS-Conv-CTC baseline (Sivakumar et al. 2024) as two model stages.

Input: log-spectrograms ``(T, N, 2, 16, 33)`` at 125 Hz (``transforms=log_spectrogram``).

- encoder slot, :class:`SpectrogramMLPEncoder`: SpectrogramNorm (BatchNorm2d over the 2x16
  electrode channels) -> per-band rotation-invariant MLP (Linear 528->384 + ReLU applied to the
  electrodes rolled by -1, 0, +1, mean over the rotations) -> flatten bands: ``(T, N, 768)``;
- front-end: identity;
- backbone slot, :class:`TDSConvBackbone`: 4 x (TDSConv2dBlock + TDSFullyConnectedBlock),
  time-depth-separable convolutions (Hannun et al. 2019) of kernel width 32, each block
  without padding, so the output is ``kernel_width - 1`` frames shorter per conv block.

The classifier (768 -> 99) comes from ``build_model``. Submodule names follow
facebookresearch/emg2qwerty (``batch_norm``, ``mlps.i.mlp.0``, ``tds_conv_blocks.j.conv2d``,
``fc_block.0/2``, ``layer_norm``), so its checkpoints map by prefix only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from emg2qwerty_ssm.models.base import State, StreamingModule
from emg2qwerty_ssm.models.cost import BlockCost, trainable_params
from emg2qwerty_ssm.models.encoder import BandMLP


class SpectrogramNorm(nn.Module):
    """BatchNorm2d per electrode channel over (batch, frequency, time).

    ``(T, N, bands, C, freq) -> (T, N, bands, C, freq)`` with ``channels = bands * C``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.batch_norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, n, bands, c, freq = x.shape
        y = x.movedim(0, -1).reshape(n, bands * c, freq, t)
        y = self.batch_norm(y)
        return y.reshape(n, bands, c, freq, t).movedim(-1, 0)


class RotationInvariantMLP(BandMLP):
    """One band's MLP over electrode rotations: ``(T, N, C, ...) -> (T, N, mlp_features[-1])``.

    :class:`~emg2qwerty_ssm.models.encoder.BandMLP` with Linear+ReLU layers and no norm; only
    the state-dict names differ: facebookresearch/emg2qwerty's ``mlp.0`` / ``mlp.2`` / ...
    (an ``nn.Sequential`` of Linear, ReLU pairs) for ``linear_layers.0`` / ``linear_layers.1``
    / ..., so its checkpoints keep loading by prefix.
    """

    single_view_shortcut = False  # always through the rotation stack, as emg2qwerty

    def __init__(
        self,
        in_features: int,
        mlp_features: Sequence[int],
        pooling: str = "mean",
        offsets: Sequence[int] = (-1, 0, 1),
    ) -> None:
        super().__init__(in_features, mlp_features, "none", "relu", offsets, pooling)
        self.register_state_dict_post_hook(_to_emg2qwerty_names)
        self.register_load_state_dict_pre_hook(_from_emg2qwerty_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_rotations(x)


def _to_emg2qwerty_names(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """``<prefix>linear_layers.<j>.*`` -> ``<prefix>mlp.<2j>.*``, in place, order kept."""
    pattern = re.compile(re.escape(prefix) + r"linear_layers\.(\d+)\.")
    items = list(state_dict.items())
    state_dict.clear()
    for key, value in items:
        m = pattern.match(key)
        if m:
            key = f"{prefix}mlp.{2 * int(m.group(1))}.{key[m.end() :]}"
        state_dict[key] = value


def _from_emg2qwerty_names(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """``<prefix>mlp.<2j>.*`` -> ``<prefix>linear_layers.<j>.*`` before loading."""
    pattern = re.compile(re.escape(prefix) + r"mlp\.(\d+)\.")
    for key in [k for k in state_dict if pattern.match(k)]:
        m = pattern.match(key)
        assert m is not None
        index = int(m.group(1))
        if index % 2:  # an odd index would be a ReLU: no weights; leave it to be refused
            continue
        state_dict[f"{prefix}linear_layers.{index // 2}.{key[m.end() :]}"] = state_dict.pop(key)


class MultiBandRotationInvariantMLP(nn.Module):
    """A separate :class:`RotationInvariantMLP` per band.

    ``(T, N, bands, C, ...) -> (T, N, bands, mlp_features[-1])``.
    """

    def __init__(
        self,
        in_features: int,
        mlp_features: Sequence[int],
        pooling: str = "mean",
        offsets: Sequence[int] = (-1, 0, 1),
        num_bands: int = 2,
    ) -> None:
        super().__init__()
        self.num_bands = num_bands
        self.mlps = nn.ModuleList(
            RotationInvariantMLP(in_features, mlp_features, pooling, offsets)
            for _ in range(num_bands)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([mlp(b) for mlp, b in zip(self.mlps, x.unbind(2), strict=True)], dim=2)


class SpectrogramMLPEncoder(StreamingModule):
    """The baseline's encoder stage: SpectrogramNorm -> per-band rotation-invariant MLP -> flatten.

    ``(T, N, num_bands, electrode_channels, freq_bins) -> (T, N, num_bands * mlp_features[-1])``,
    frame by frame (stride 1, no context).
    """

    def __init__(
        self,
        num_bands: int = 2,
        electrode_channels: int = 16,
        freq_bins: int = 33,
        mlp_features: Sequence[int] = (384,),
        pooling: str = "mean",
        offsets: Sequence[int] = (-1, 0, 1),
    ) -> None:
        super().__init__()
        self.input_shape = (num_bands, electrode_channels, freq_bins)
        self.in_features = num_bands * electrode_channels * freq_bins
        self.out_features = num_bands * int(mlp_features[-1])
        self.mlp_features = [int(f) for f in mlp_features]
        self.offsets = tuple(offsets) if len(offsets) > 0 else (0,)
        self.spec_norm = SpectrogramNorm(num_bands * electrode_channels)
        self.mlp = MultiBandRotationInvariantMLP(
            electrode_channels * freq_bins, self.mlp_features, pooling, offsets, num_bands
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, bands, C, freq) -> (T, N, bands * mlp_features[-1])."""
        if x.dim() != 5 or tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(
                f"SpectrogramMLPEncoder: expected log-spectrogram input (T, N, "
                f"{', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}; "
                "this model needs transforms=log_spectrogram"
            )
        return self.mlp(self.spec_norm(x)).flatten(start_dim=2)

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        r = input_rate_hz
        bands, _, _ = self.input_shape
        n_rot = len(self.offsets)
        norm_params = trainable_params(self.spec_norm)
        mlp_params = trainable_params(self.mlp)
        sizes = [self.in_features // bands, *self.mlp_features]
        macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        return [
            # per-channel affine ahead of a Linear: folds into it (docs/models.md#cost-convention)
            BlockCost("spec_norm", "norm", norm_params, r, r),
            BlockCost(
                "mlp",
                "linear",
                mlp_params,
                r,
                r,
                weight_macs_per_s=bands * n_rot * macs * r,
                # mean over the rotations
                other_ops_per_s=bands * (n_rot - 1) * self.mlp_features[-1] * r,
            ),
        ]


class TDSConv2dBlock(nn.Module):
    """Time-depth-separable conv block: ``(T, N, channels * width) -> (T - kernel_width + 1, ...)``.

    Conv2d(channels, channels, (1, kernel_width)) over time for each of ``width`` features, ReLU,
    residual from the last ``T_out`` input frames, LayerNorm over ``channels * width``.
    """

    def __init__(self, channels: int, width: int, kernel_width: int) -> None:
        super().__init__()
        self.channels = channels
        self.width = width
        self.kernel_width = kernel_width
        self.conv2d = nn.Conv2d(channels, channels, kernel_size=(1, kernel_width))
        self.relu = nn.ReLU()
        self.layer_norm = nn.LayerNorm(channels * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t_in, n, c = x.shape
        y = x.movedim(0, -1).reshape(n, self.channels, self.width, t_in)
        y = self.relu(self.conv2d(y))
        y = y.reshape(n, c, -1).movedim(-1, 0)
        return self.layer_norm(y + x[x.shape[0] - y.shape[0] :])


class TDSFullyConnectedBlock(nn.Module):
    """Linear -> ReLU -> Linear, residual, LayerNorm: ``(T, N, F) -> (T, N, F)``."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.fc_block = nn.Sequential(
            nn.Linear(num_features, num_features),
            nn.ReLU(),
            nn.Linear(num_features, num_features),
        )
        self.layer_norm = nn.LayerNorm(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.fc_block(x) + x)


class TDSConvBackbone(StreamingModule):
    """TDSConvEncoder as a backbone stage: ``(T, N, F) -> (T - left_context, N, F)``.

    ``len(block_channels)`` pairs of :class:`TDSConv2dBlock` (``channels`` must divide ``F``)
    and :class:`TDSFullyConnectedBlock`. Causal and unpadded: every conv block needs
    ``kernel_width - 1`` past frames, so ``left_context = len(block_channels) * (kw - 1)``
    (124 for the baseline) and the output starts that many frames after the input.
    """

    def __init__(
        self,
        in_features: int,
        block_channels: Sequence[int] = (24, 24, 24, 24),
        kernel_width: int = 32,
    ) -> None:
        super().__init__()
        if len(block_channels) == 0:
            raise ValueError("TDSConvBackbone: block_channels must not be empty")
        if kernel_width < 1:
            raise ValueError(f"TDSConvBackbone: kernel_width must be >= 1, got {kernel_width}")
        blocks: list[nn.Module] = []
        for channels in block_channels:
            if in_features % channels != 0:
                raise ValueError(
                    f"TDSConvBackbone: block_channels entry {channels} must divide "
                    f"in_features {in_features}"
                )
            blocks += [
                TDSConv2dBlock(channels, in_features // channels, kernel_width),
                TDSFullyConnectedBlock(in_features),
            ]
        self.tds_conv_blocks = nn.Sequential(*blocks)
        self.in_features = self.out_features = in_features
        self.kernel_width = kernel_width
        self.block_channels = [int(c) for c in block_channels]

    @property
    def left_context(self) -> int:
        return len(self.block_channels) * (self.kernel_width - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, F) -> (T - left_context, N, F); empty when T <= left_context."""
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"TDSConvBackbone: expected input (T, N, {self.in_features}), got {tuple(x.shape)}"
            )
        if x.shape[0] <= self.left_context:
            return x.new_zeros(0, x.shape[1], self.out_features)
        return self.tds_conv_blocks(x)

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Per conv block, the last ``kernel_width - 1`` input frames seen (empty at start)."""
        dtype = next(self.parameters()).dtype
        empty = torch.zeros(0, batch_size, self.in_features, device=device, dtype=dtype)
        return [empty] * len(self.block_channels)

    def forward_stream(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Consume ``(t, N, F)``; the first ``left_context`` frames overall produce no output."""
        if state is None:
            state = self.initial_state(x.shape[1], x.device)
        keep = self.kernel_width - 1
        new_state = []
        i = 0
        for block in self.tds_conv_blocks:
            if isinstance(block, TDSConv2dBlock):
                buffered = torch.cat([state[i], x], dim=0)
                x = buffered[:0] if buffered.shape[0] < self.kernel_width else block(buffered)
                start = buffered.shape[0] - keep if keep else buffered.shape[0]
                new_state.append(buffered[max(0, start) :])
                i += 1
            elif x.shape[0]:
                x = block(x)
        return x, new_state

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        r = input_rate_hz
        f = self.in_features
        costs = []
        for j, block in enumerate(self.tds_conv_blocks):
            params = trainable_params(block)
            if isinstance(block, TDSConv2dBlock):
                c, w, k = block.channels, block.width, block.kernel_width
                costs.append(
                    BlockCost(
                        f"tds_conv_blocks.{j}",
                        "conv",
                        params,
                        r,
                        r,
                        weight_macs_per_s=c * c * k * w * r,
                        other_ops_per_s=3 * f * r,  # residual add + LayerNorm
                        # past input frames kept for the convolution
                        state_size=(k - 1) * f,
                    )
                )
            else:
                costs.append(
                    BlockCost(
                        f"tds_conv_blocks.{j}",
                        "linear",
                        params,
                        r,
                        r,
                        weight_macs_per_s=2 * f * f * r,
                        other_ops_per_s=3 * f * r,  # residual add + LayerNorm
                    )
                )
        return costs
