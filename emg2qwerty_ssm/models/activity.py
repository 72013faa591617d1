"""Activity statistics of event-based stages (EGRU, SNN), model-wide.

Duck-typed: any stage with ``reset_activity()``, ``regularization_loss()``,
``activity_metrics()`` or an ``activity_rate`` property takes part, so a new event-based stage
needs no change here. The trainer resets the statistics before a test pass; the Lightning
module adds the regularisers to the loss and logs the metrics.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["activity_metrics", "activity_rates", "regularization_loss", "reset_activity"]


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if m is not model]


def reset_activity(model: nn.Module) -> None:
    """Forget the activity statistics of every event-based stage (SNN, EGRU) in ``model``."""
    for _, module in _stages(model):
        fn = getattr(module, "reset_activity", None)
        if callable(fn):
            fn()


def regularization_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the stages' activity regularisers of the last forward (None if there are none)."""
    terms = []
    for _, module in _stages(model):
        fn = getattr(module, "regularization_loss", None)
        if callable(fn) and (value := fn()) is not None:
            terms.append(value)
    return torch.stack(terms).sum() if terms else None


def activity_metrics(model: nn.Module) -> dict[str, float]:
    """``{"<module>/<metric>": value}`` from every stage's ``activity_metrics()``."""
    out: dict[str, float] = {}
    for name, module in _stages(model):
        fn = getattr(module, "activity_metrics", None)
        if callable(fn):
            out.update({f"{name}/{k}": v for k, v in fn().items()})
    return out


def activity_rates(model: nn.Module) -> dict[str, float]:
    """``{module name: activity_rate}`` of every event-based stage that has run (for logging)."""
    rates = {}
    for name, module in _stages(model):
        rate = getattr(module, "activity_rate", None)
        if isinstance(rate, float):
            rates[name] = rate
    return rates
