"""Low-frequency backbones: the residual S4D stack (docs/models.md#architecture rows 5a–5c).

The TDS-Conv baseline backbone lives in ``tds.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from emg2qwerty_ssm.models.base import State, StreamingModule
from emg2qwerty_ssm.models.cost import BlockCost, linear_cost, pool_cost, trainable_params
from emg2qwerty_ssm.models.norms import ThreadInvariantLayerNorm
from emg2qwerty_ssm.models.s4d import S4D, TiedDropout


class S4DBackbone(StreamingModule):
    """Linear encoder → ``n_layers`` residual S4D blocks (post-norm) → Linear decoder → GELU.

    Block i on ``x (L, N, H)``: ``z = dropout(S4D(x))``; ``x = z + x``; if ``end_pools[i] > 1``
    trim L to a multiple of the pool and mean-pool non-overlapping groups; ``x = LayerNorm(x)``.
    ``(T, N, in_features) -> (T // prod(end_pools), N, d_output)``; ``d_output`` None or -1
    means ``in_features`` (the seed's ``d_output: -1``).
    """

    def __init__(
        self,
        in_features: int,
        d_model: int = 96,
        n_layers: int = 8,
        d_state: int = 32,
        d_output: int | None = None,
        dropout: float = 0.1,
        dropout_inner: float | None = None,
        dt_min: float = 0.04,
        dt_max: float = 4.0,
        ssm_lr: float | None = 5e-4,
        end_pools: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        pools = list(end_pools) if end_pools else [1] * n_layers
        pools = [max(int(p), 1) for p in pools]  # the seed writes "no pool" as 0
        if pools == [1]:
            pools = [1] * n_layers
        if len(pools) != n_layers:
            raise ValueError(
                f"end_pools {list(end_pools or [])} must have n_layers={n_layers} entries"
            )
        d_output = in_features if d_output in (None, -1) else d_output
        inner = dropout if dropout_inner is None else dropout_inner
        self.encoder = nn.Linear(in_features, d_model)
        self.s4_layers = nn.ModuleList(
            S4D(d_model, d_state, inner, dt_min, dt_max, ssm_lr) for _ in range(n_layers)
        )
        self.dropouts = nn.ModuleList(TiedDropout(dropout) for _ in range(n_layers))
        self.norms = nn.ModuleList(ThreadInvariantLayerNorm(d_model) for _ in range(n_layers))
        self.decoder = nn.Linear(d_model, d_output)
        self.end_pools = pools
        self.stride = math.prod(pools)
        self.in_features, self.out_features, self.d_model = in_features, d_output, d_model

    @property
    def left_context(self) -> int | None:
        return None  # unbounded, carried by the SSM state

    def _blocks(self) -> list[tuple[S4D, TiedDropout, nn.LayerNorm, int]]:
        """Per residual block: (S4D, outer dropout, LayerNorm, end pool)."""
        return [
            (cast(S4D, s4), cast(TiedDropout, d), cast(nn.LayerNorm, n), p)
            for s4, d, n, p in zip(
                self.s4_layers, self.dropouts, self.norms, self.end_pools, strict=True
            )
        ]

    @staticmethod
    def _pool(x: torch.Tensor, p: int) -> torch.Tensor:
        """Mean over groups of p frames, remainder dropped: ``(L, ...) -> (L // p, ...)``."""
        n = x.shape[0] // p
        return x[: n * p].reshape(n, p, *x.shape[1:]).mean(dim=1)

    def _lengths(self, length: int) -> list[int]:
        """The sequence length each block's S4D sees for an input of ``length`` frames."""
        lengths = []
        for p in self.end_pools:
            lengths.append(length)
            length = length // p
        return lengths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        blocks = self._blocks()
        # training: every block's SSM kernel in one computation (S4D.training_kernels)
        kernels = S4D.training_kernels([s4 for s4, *_ in blocks], self._lengths(x.shape[0]))
        for (s4, drop, norm, p), kernel in zip(blocks, kernels, strict=True):
            z = s4(x, kernel)
            mask = drop.mask(z)
            # dropout and residual in one operation: x + z * keep / (1 - p)
            x = z + x if mask is None else torch.addcmul(x, z, mask)
            if p > 1:
                x = self._pool(x, p)
            x = norm(x)
        return F.gelu(self.decoder(x))

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Per block: (complex SSM state (N, H, modes), residual frames awaiting the pool)."""
        dtype = self.encoder.weight.dtype
        empty = torch.zeros(0, batch_size, self.d_model, device=device, dtype=dtype)
        return [(s4.initial_state(batch_size, device, dtype), empty) for s4, *_ in self._blocks()]

    def forward_stream(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = self.encoder(x)
        new_state = []
        for (s4, drop, norm, p), (ssm, buf) in zip(self._blocks(), state, strict=True):
            z, ssm = s4.forward_stream(x, ssm)
            x = drop(z) + x
            if p > 1:
                x = torch.cat([buf, x], dim=0)
                usable = x.shape[0] // p * p
                x, buf = self._pool(x[:usable], p), x[usable:]
            x = norm(x)
            new_state.append((ssm, buf))
        return F.gelu(self.decoder(x)), new_state

    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        rate, h = input_rate_hz, self.d_model
        costs = [linear_cost("encoder", self.encoder, rate)]
        for i, (s4, norm, p) in enumerate((s4, norm, p) for s4, _, norm, p in self._blocks()):
            out_rate = rate / p
            conv_params = trainable_params(s4.out_conv)
            # per complex mode: Ā⊙s 4 MAC, B̄·u 2 MAC, Re(C·s) 2 MAC; plus D·u
            # (docs/models.md#cost-convention)
            ssm = BlockCost(
                f"s4_layers.{i}.ssm",
                "ssm",
                trainable_params(s4) - conv_params,
                rate,
                rate,
                recurrent_macs_per_s=(8 * s4.modes + 1) * h * rate,
                state_size=2 * s4.modes * h,
            )
            # the 1x1 GLU conv h -> 2h
            out_conv = BlockCost(
                f"s4_layers.{i}.out_conv", "conv", conv_params, rate, rate,
                weight_macs_per_s=2 * h * h * rate,
            )  # fmt: skip
            glu = BlockCost(
                f"s4_layers.{i}.glu_residual", "elementwise", 0, rate, rate,
                other_ops_per_s=2 * h * rate,
            )  # fmt: skip
            costs += [ssm, out_conv, glu]
            if p > 1:
                costs.append(pool_cost(f"pools.{i}", rate, p, h))
            costs.append(
                BlockCost(
                    f"norms.{i}", "norm", trainable_params(norm), out_rate, out_rate,
                    other_ops_per_s=2 * h * out_rate,
                )
            )  # fmt: skip
            rate = out_rate
        costs.append(linear_cost("decoder", self.decoder, rate))
        return costs
