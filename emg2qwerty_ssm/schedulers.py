"""The seed's learning-rate schedule, on torch's own ``LambdaLR`` (docs/recipe.md#lr-schedule).

The paper's code subclasses a pl_bolts scheduler ("MyCosineAnnealingWarmRestarts"); pl_bolts is
unmaintained, and the schedule is a closed-form function of the epoch, so a ``LambdaLR`` with
one factor function per parameter group reproduces it exactly (tested against the measured
table of docs/recipe.md#lr-schedule) and checkpoints/resumes like any torch scheduler.

With ``base`` = a group's initial lr, ``T_cur = epoch mod T_0``, ``cycle = epoch div T_0`` and
``decay = lr_decay[min(cycle, len(lr_decay) - 1)]``::

    T_cur < warmup_epochs:  lr = eta_min + (base*decay - eta_min) * T_cur / warmup_epochs
    otherwise:              lr = eta_min + (base*decay - eta_min) * (1 + cos(pi*T_cur/T_0)) / 2

The warm-up starts at ``eta_min`` in epoch 0, and the cosine phase measures ``T_cur`` from the
start of the cycle (not from the end of the warm-up), exactly as the seed does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_lr(
    epoch: int,
    base_lr: float,
    T_0: int,
    warmup_epochs: int,
    lr_decay: Sequence[float],
    eta_min: float,
) -> float:
    """The schedule's learning rate at ``epoch`` for a parameter group starting at ``base_lr``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    t_cur = epoch % T_0
    cycle = epoch // T_0
    decay = lr_decay[min(cycle, len(lr_decay) - 1)] if len(lr_decay) else 1.0
    peak = base_lr * decay
    if t_cur < warmup_epochs:
        return eta_min + (peak - eta_min) * t_cur / warmup_epochs
    return eta_min + (peak - eta_min) * (1.0 + math.cos(math.pi * t_cur / T_0)) / 2.0


class _GroupFactor:
    """``LambdaLR`` factor for one group: the schedule's lr divided by the group's base lr.

    A callable object rather than a closure, so ``LambdaLR.state_dict`` stores its fields
    (plain numbers) and checkpoints stay loadable with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        base_lr: float,
        T_0: int,
        warmup_epochs: int,
        lr_decay: Sequence[float],
        eta_min: float,
    ) -> None:
        self.base_lr = float(base_lr)
        self.T_0 = int(T_0)
        self.warmup_epochs = int(warmup_epochs)
        self.lr_decay = [float(d) for d in lr_decay]
        self.eta_min = float(eta_min)

    def __call__(self, epoch: int) -> float:
        lr = warmup_cosine_lr(
            epoch, self.base_lr, self.T_0, self.warmup_epochs, self.lr_decay, self.eta_min
        )
        # LambdaLR multiplies the group's initial lr by this factor.
        return lr / self.base_lr if self.base_lr > 0 else 0.0


def cosine_warm_restarts(
    optimizer: torch.optim.Optimizer,
    T_0: int = 450,
    warmup_epochs: int = 10,
    lr_decay: Sequence[float] = (1.0, 0.5),
    eta_min: float = 1e-6,
    last_epoch: int = -1,
) -> LambdaLR:
    """Warm-up + cosine annealing with warm restarts and per-cycle decay
    (docs/recipe.md#lr-schedule).

    Step it once per epoch. Each parameter group is scheduled from its own initial lr, so the
    S4D group (lr 5e-4) and the rest (2.5e-3) follow the same shape at their own scale.
    """
    if T_0 < 1:
        raise ValueError(f"lr_scheduler T_0 must be >= 1, got {T_0}")
    if not 0 <= warmup_epochs <= T_0:
        raise ValueError(
            f"lr_scheduler warmup_epochs must be in [0, T_0={T_0}], got {warmup_epochs}"
        )
    if eta_min < 0:
        raise ValueError(f"lr_scheduler eta_min must be >= 0, got {eta_min}")
    factors = [
        _GroupFactor(group.get("initial_lr", group["lr"]), T_0, warmup_epochs, lr_decay, eta_min)
        for group in optimizer.param_groups
    ]
    return LambdaLR(optimizer, lr_lambda=factors, last_epoch=last_epoch)  # type: ignore[arg-type]
