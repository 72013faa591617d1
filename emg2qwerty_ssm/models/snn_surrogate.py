"""Surrogate-gradient functions of the spiking front-end (``snn.py``).

- :class:`ATanSpike`: Heaviside step ``H(x) = [x >= 0]`` forward; backward the derivative of the
  smooth arctangent step ``g(x) = atan(pi/2 * alpha * x) / pi + 1/2``, i.e.
  ``g'(x) = alpha / 2 / (1 + (pi/2 * alpha * x)^2)`` (spikingjelly's ``surrogate.ATan``, which
  the authors' ``SJ_SNN`` uses with ``alpha = alpha_surr_grad``).
- :class:`SugarReLU`: ReLU forward; backward the derivative of B-SiLU
  ``(x + a) * sigmoid(x) - a / 2`` with ``a = 1.67`` (the authors' ``sparse_sugar_X``).
- :func:`post_reduction_activation`: the ``activation_post_reduction`` options.

All are element-wise and shape-preserving.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

#: B-SiLU's shift in the authors' ``Sugar`` backward
SUGAR_ALPHA = 1.67


def atan_smooth_step(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The smooth step whose derivative is the arctangent surrogate (for tests and plots)."""
    return torch.atan(math.pi / 2 * alpha * x) / math.pi + 0.5


def atan_surrogate_grad(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """``d/dx atan_smooth_step(x, alpha) = alpha / 2 / (1 + (pi/2 * alpha * x)^2)``."""
    return alpha / 2 / (1 + (math.pi / 2 * alpha * x) ** 2)


class ATanSpike(torch.autograd.Function):
    """``apply(x, alpha) -> [x >= 0]`` with the arctangent surrogate gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * atan_surrogate_grad(x, ctx.alpha), None


def sugar_surrogate_grad(x: torch.Tensor) -> torch.Tensor:
    """Derivative of B-SiLU ``(x + a) sigmoid(x) - a/2``: ``s (1 + (x + a)(1 - s))``."""
    s = torch.sigmoid(x)
    return s * (1 + (x + SUGAR_ALPHA) * (1 - s))


class SugarReLU(torch.autograd.Function):
    """``apply(x) -> relu(x)`` with the B-SiLU surrogate gradient (SUGAR)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * sugar_surrogate_grad(x)


class _SugarModule(nn.Module):
    def __init__(self, width: float) -> None:
        super().__init__()
        self.width = width  # the seed's X: only its (detached) non-zero statistic used it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SugarReLU.apply(x)


def post_reduction_activation(name: str) -> nn.Module:
    """``none`` | ``relu`` | ``gelu`` | ``sparse_relu_X`` | ``sparse_sugar_X``.

    ``sparse_relu_X`` is ReLU in forward and backward: the seed's smooth-step of width X only
    fed a detached non-zero count, which the front-end measures directly. ``sparse_sugar_X`` is
    ReLU forward with the SUGAR backward.
    """
    if name == "none":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    for prefix in ("sparse_relu_", "sparse_sugar_"):
        if name.startswith(prefix):
            try:
                width = float(name[len(prefix) :])
            except ValueError:
                break
            if prefix == "sparse_relu_":
                from emg2qwerty_ssm.models.encoder import SparseReLU

                return SparseReLU(width)
            return _SugarModule(width)
    raise ValueError(
        f"activation_post_reduction must be none, relu, gelu, sparse_relu_<X> or "
        f"sparse_sugar_<X>, got {name!r}"
    )
