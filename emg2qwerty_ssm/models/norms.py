"""A LayerNorm whose gradients do not depend on the number of CPU threads.

PyTorch's CPU LayerNorm backward sums ``∂weight`` and ``∂bias`` over the rows in per-thread
partial sums, so the same step gives other float roundings at 1 and at 2 threads; in S4_large
these are the only gradients that differ (forward, every other gradient and Adam are
bit-identical at 1 and 2 threads: ``tests/test_thread_invariance.py``). With this LayerNorm the
backward runs on one thread whenever more are set, which is exactly what it computes at one
thread, so a training run may change its thread count at any step (``make pareto`` hands a
finished stream's core to a running job, ``emg2qwerty_ssm/elastic_threads.py``) and still
give the same weights. At one thread it is ``nn.LayerNorm`` itself (same operators).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def one_thread():  # noqa: ANN201
    """Run the block on one intra-op thread, then restore the thread count."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(  # noqa: D102
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
    ) -> torch.Tensor:
        shape = [x.shape[-1]]
        out, mean, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(x, mean, rstd, weight, bias)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        x, mean, rstd, weight, bias = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        with one_thread():  # the row sums of ∂weight, ∂bias in one fixed order
            gx, gw, gb = torch.ops.aten.native_layer_norm_backward(
                grad.contiguous(), x, [x.shape[-1]], mean, rstd, weight, bias, mask
            )
        return gx, gw, gb, None


class ThreadInvariantLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last axis (with its affine), whose backward gives the same
    floats at any CPU thread count (see the module docstring). Same parameters and state dict
    keys as ``nn.LayerNorm``."""

    def __init__(self, features: int, eps: float = 1e-5) -> None:
        super().__init__(features, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.device.type != "cpu"
            or torch.get_num_threads() == 1
            or not torch.is_grad_enabled()
            or torch.is_autocast_enabled("cpu")  # autocast runs layer_norm in float32
            or not (x.requires_grad or self.weight.requires_grad)
        ):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return _LayerNorm.apply(x.contiguous(), self.weight, self.bias, self.eps)
