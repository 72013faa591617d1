"""Input stage: time mean-pooling + per-band rotation-invariant MLP (docs/models.md#architecture
rows 1–3).

Input ``(T, N, bands, electrodes[, extra...])`` (raw EMG: ``(T, N, 2, 16)``; a
log-spectrogram: ``(T, N, 2, 16, 33)``), output ``(T // P, N, bands * F)`` with the bands'
features side by side ``[left F, right F]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn

from emg2qwerty_ssm.models import s4d_reference as ref
from emg2qwerty_ssm.models.base import StreamingModule
from emg2qwerty_ssm.models.cost import BlockCost, linear_cost, pool_cost, trainable_params
from emg2qwerty_ssm.models.norms import ThreadInvariantLayerNorm


class SparseReLU(nn.Module):
    """The seed's ``sparse_relu_<sharpness>``: forward (and backward) are exactly ReLU.

    The seed also returns a Heaviside step of the input with an arctan surrogate gradient, but
    that output only feeds a detached firing-rate statistic and a regulariser of weight 0, so it
    never changes training. We keep the statistic only: with ``record_activity=True`` the
    fraction of positive inputs of the last call is stored in :attr:`activity`.
    """

    def __init__(self, sharpness: float = 10.0, record_activity: bool = False) -> None:
        super().__init__()
        self.sharpness = sharpness  # kept for config round-trips; unused by the forward pass
        self.record_activity = record_activity
        self.activity: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record_activity:
            self.activity = (x > 0).float().mean().detach()
        return torch.relu(x)


def make_activation(name: str) -> nn.Module:
    """``relu``, ``gelu`` or ``sparse_relu[_<sharpness>]`` (the seed's ``sparse_relu_10``)."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name.startswith("sparse_relu"):
        suffix = name[len("sparse_relu") :].lstrip("_")
        try:
            return SparseReLU(float(suffix) if suffix else 10.0)
        except ValueError:
            pass
    raise ValueError(f"unknown activation {name!r}; use relu, gelu or sparse_relu[_<k>]")


class _FeatureNorm(nn.Module):
    """LayerNorm or BatchNorm over the last (feature) axis of ``(..., F)``."""

    def __init__(self, kind: str, features: int) -> None:
        super().__init__()
        if kind == "layernorm":
            self.norm: nn.Module = ThreadInvariantLayerNorm(features)
        elif kind == "batchnorm":
            self.norm = nn.BatchNorm1d(features)
        elif kind in ("none", None):
            self.norm = nn.Identity()
        else:
            raise ValueError(f"unknown norm {kind!r}; use layernorm, batchnorm or none")
        self.kind = kind or "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "batchnorm":
            return self.norm(x)
        return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class BandMLP(nn.Module):
    """One band's rotation-invariant MLP: ``[Linear → norm → activation] × len(mlp_features)``.

    ``forward`` applies the layers to flattened features ``(..., in_features)``;
    :meth:`forward_rotations` takes ``(T, N, electrodes, ...)``, rolls the electrode axis
    (dim 2) circularly by each of ``offsets``, applies the layers to each rotation's flattened
    ``electrodes × ...`` features and pools the rotations (``mean`` or ``max``):
    ``-> (T, N, mlp_features[-1])``. The one implementation behind the S4 models' encoder and
    the TDS baseline's (:class:`emg2qwerty_ssm.models.tds.RotationInvariantMLP`).
    """

    #: with offsets (0,), skip the rotation stack (same values, rounding of another matmul
    #: shape; the TDS baseline keeps emg2qwerty's stacked computation bit for bit)
    single_view_shortcut = True

    def __init__(
        self,
        in_features: int,
        mlp_features: Sequence[int],
        norm: str,
        activation: str,
        offsets: Sequence[int] = (0,),
        pooling: str = "mean",
    ):
        super().__init__()
        name = type(self).__name__
        if len(mlp_features) == 0:
            raise ValueError(f"{name}: mlp_features must list at least one layer size")
        if pooling not in ("mean", "max"):
            raise ValueError(f"{name}: pooling must be 'mean' or 'max', got {pooling!r}")
        sizes = [in_features, *mlp_features]
        self.linear_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)
        )
        self.norms = nn.ModuleList(_FeatureNorm(norm, b) for b in sizes[1:])
        self.activations = nn.ModuleList(make_activation(activation) for _ in sizes[1:])
        self.offsets = tuple(offsets) if len(offsets) > 0 else (0,)
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_layers(x)

    def apply_layers(self, x: torch.Tensor) -> torch.Tensor:
        """The layers on flattened features ``(..., in_features) -> (..., mlp_features[-1])``."""
        for linear, norm, act in zip(
            self.linear_layers, self.norms, self.activations, strict=False
        ):
            x = act(norm(linear(x)))
        return x

    def forward_rotations(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, N, electrodes, ...) -> (T, N, mlp_features[-1])``, pooled over the rotations."""
        if self.offsets == (0,) and self.single_view_shortcut and not ref.is_active():
            # one view: no roll/stack copies
            return self.apply_layers(x.flatten(start_dim=2))
        rolled = torch.stack([x.roll(o, dims=2) for o in self.offsets], dim=2)
        h = self.apply_layers(rolled.flatten(start_dim=3))  # (T, N, rotations, F)
        return h.mean(dim=2) if self.pooling == "mean" else h.amax(dim=2)


class RotationInvariantEncoder(StreamingModule):
    """Mean-pool time by ``input_mean_pooling`` then apply a rotation-invariant MLP per band.

    For each offset in ``offsets`` the electrode axis is rolled circularly, the band's MLP is
    applied to the flattened ``electrodes × extra`` features, and the results are averaged
    (``pooling="mean"``) or max-reduced (``"max"``) over the offsets. Each band has its own
    weights. ``(T, N, bands, electrodes, ...) -> (T // P, N, bands * mlp_features[-1])``.
    """

    def __init__(
        self,
        mlp_features: Sequence[int],
        electrodes: int = 16,
        bands: int = 2,
        in_features: int | None = None,
        norm: str = "layernorm",
        activation: str = "sparse_relu_10",
        offsets: Sequence[int] = (0,),
        pooling: str = "mean",
        input_mean_pooling: int = 1,
    ) -> None:
        super().__init__()
        if not mlp_features:
            raise ValueError("encoder.mlp_features must list at least one layer size")
        if pooling not in ("mean", "max"):
            raise ValueError(f"encoder.pooling must be 'mean' or 'max', got {pooling!r}")
        if input_mean_pooling < 1:
            raise ValueError(f"encoder.input_mean_pooling must be >= 1, got {input_mean_pooling}")
        # in_features = features per band after flattening (16 raw, 16 * 33 spectrogram)
        self.band_features = in_features or electrodes
        self.electrodes, self.bands = electrodes, bands
        self.offsets, self.pooling = list(offsets), pooling
        self.stride = input_mean_pooling
        self.mlp_features = list(mlp_features)
        self.norm_kind = norm
        self.mlps = nn.ModuleList(
            BandMLP(self.band_features, mlp_features, norm, activation, offsets, pooling)
            for _ in range(bands)
        )
        self.in_features = bands * self.band_features
        self.out_features = bands * self.mlp_features[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, n = x.shape[:2]
        if x.shape[2] != self.bands or x.shape[3] != self.electrodes:
            raise ValueError(
                f"encoder expects input (T, N, {self.bands}, {self.electrodes}, ...), "
                f"got {tuple(x.shape)}"
            )
        p = self.stride
        if p > 1:  # remainder frames that do not fill a pool are dropped
            x = x[: t // p * p].reshape(t // p, p, *x.shape[1:]).mean(dim=1)
        # each band (T', N, electrodes, ...) through its own rotation-invariant MLP
        bands = [
            cast(BandMLP, mlp).forward_rotations(x[:, :, b]) for b, mlp in enumerate(self.mlps)
        ]
        return torch.cat(bands, dim=-1)

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        rate = input_rate_hz / self.stride
        rot = len(self.offsets)
        costs = []
        if self.stride > 1:
            costs.append(pool_cost("pool", input_rate_hz, self.stride, self.in_features))
        for b, band_mlp in enumerate(self.mlps):
            mlp = cast(BandMLP, band_mlp)
            for j, (linear, feature_norm) in enumerate(
                zip(mlp.linear_layers, mlp.norms, strict=True)
            ):
                lin, norm = cast(nn.Linear, linear), cast(_FeatureNorm, feature_norm)
                costs.append(linear_cost(f"mlps.{b}.linear_layers.{j}", lin, rate, copies=rot))
                # LayerNorm: 2 ops per element; BatchNorm folds into the Linear
                # (docs/models.md#cost-convention); "none" is still listed (0 params)
                ops = 2 * lin.out_features * rot * rate if norm.kind == "layernorm" else 0.0
                costs.append(
                    BlockCost(
                        f"mlps.{b}.norms.{j}", "norm", trainable_params(norm), rate, rate,
                        other_ops_per_s=ops,
                    )
                )  # fmt: skip
            if rot > 1:
                feats = self.mlp_features[-1]
                costs.append(
                    BlockCost(
                        f"mlps.{b}.rotation_pool", "pool", 0, rate, rate,
                        other_ops_per_s=rot * feats * rate,
                    )
                )  # fmt: skip
        return costs
