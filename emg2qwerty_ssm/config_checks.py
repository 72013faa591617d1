"""Config values checked when the run starts, before data or models are built.

A wrong value given on the command line (``evaluation.batch_size=0``, ``optimizer.lr=fast``)
would otherwise fail deep inside a DataLoader or an optimizer, minutes later (after training,
for the evaluation settings), with a message that names neither the key nor the value.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["ConfigValueError", "check_config_values"]

#: keys (dotted) that must be positive integers when present
POSITIVE_INTS = (
    "batch_size",
    "datamodule.window_length",
    "datamodule.train_on_longer.factor",
    "datamodule.train_on_longer.batch_size",
    "datamodule.val_continuous.window_length",
    "datamodule.val_continuous.batch_size",
    "evaluation.chunk_length",
    "evaluation.batch_size",
    "trainer.max_epochs",
)
NON_NEGATIVE_INTS = ("num_workers", "datamodule.train_on_longer.every")
#: keys that must be finite non-negative numbers when present
NON_NEGATIVE_NUMBERS = (
    "optimizer.lr",
    "optimizer.weight_decay",
    "checkpointing.every_seconds",
)


class ConfigValueError(ValueError):
    """One or more config values of the wrong type or range; every key is named."""


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def check_config_values(cfg: DictConfig) -> None:
    """Raise :class:`ConfigValueError` listing every key whose value is out of type/range."""
    problems = []
    for key in POSITIVE_INTS:
        value = _get(cfg, key)
        if value is not None and not (_is_int(value) and value > 0):
            problems.append(f"{key}={value!r}: expected a positive integer")
    for key in NON_NEGATIVE_INTS:
        value = _get(cfg, key)
        if value is not None and not (_is_int(value) and value >= 0):
            problems.append(f"{key}={value!r}: expected an integer >= 0")
    for key in NON_NEGATIVE_NUMBERS:
        value = _get(cfg, key)
        if value is not None and not (_is_number(value) and value >= 0):
            problems.append(f"{key}={value!r}: expected a finite number >= 0")
    if problems:
        raise ConfigValueError(
            "invalid config value(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
