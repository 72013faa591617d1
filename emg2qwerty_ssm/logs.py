"""Quiet, informative logs for training runs.

Every line printed once, and only lines a user can act on:

- Lightning adds its own console handler when it is imported before logging is configured;
  once Hydra has configured the root logger (console + ``<run dir>/train.log``) that handler
  prints every Lightning line a second time, so :func:`setup_run_logging` removes it and lets
  the records propagate to the root handlers (once on the console, once in ``train.log``).
- Messages nobody can act on are filtered (:data:`NOISE`): Lightning's litlogger tip, its
  ``srun`` hint (SLURM users launch through ``cluster=slurm``), PyTorch's ``LeafSpec``
  deprecation inside Lightning, Optuna's ``ExperimentalWarning`` for the multi-objective
  sampler options the sweeper uses on purpose.
- Lightning's module summary (whose FLOPs column reads 0 because it does not run the model)
  is replaced by one line with the parameters and streaming MAC/s (:func:`log_model_card`).
- :class:`ValidationReport` logs each validation's CER and warns when training ends without
  any validation.
- :func:`warn_unused_gpu` warns loudly when CUDA is present but the trainer runs on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger("emg2qwerty_ssm.train")

#: (warning message regex) of warnings that carry nothing the user can act on
NOISE_WARNINGS = (
    r"The `srun` command is available on your system but is not used",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
)
#: log-message prefixes dropped from Lightning's rank-zero logger
NOISE_LOG_PREFIXES = ("💡 Tip:",)
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE_LOG_PREFIXES)


def install_filters() -> None:
    """Silence the warnings and tips in :data:`NOISE_WARNINGS` / :data:`NOISE_LOG_PREFIXES`."""
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    try:
        from optuna.exceptions import ExperimentalWarning

        warnings.filterwarnings("ignore", category=ExperimentalWarning)
    except ImportError:  # optuna is only needed for hparams_search
        pass
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropPrefixes) for f in rank_zero.filters):
        rank_zero.addFilter(_DropPrefixes())


def setup_run_logging() -> None:
    """Filters, and one console line per Lightning record when the root logger has handlers."""
    install_filters()
    if not logging.getLogger().handlers:  # not configured (plain Python): keep Lightning's
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's own console handler
                logger.removeHandler(handler)
        logger.propagate = True


def default_num_workers() -> int:
    """DataLoader workers when ``num_workers`` is null: the CPU cores this process may use
    (at most 8; more rarely helps reading 4 s windows) minus one for the training loop."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(cores, 9) - 1)


def warn_unused_gpu(trainer_cfg: Mapping[str, Any]) -> None:
    """A loud warning when CUDA is available but the trainer is configured for the CPU."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator == "cpu" and torch.cuda.is_available():
        log.warning(
            "CUDA is available (%s) but trainer.accelerator=cpu: training runs on the CPU. "
            "Use trainer=auto or trainer=gpu to train on the GPU.",
            torch.cuda.get_device_name(0),
        )


def log_model_card(name: str, card: Mapping[str, Any]) -> None:
    """One line instead of Lightning's module summary: parameters and streaming MAC/s."""
    macs = card.get("macs_per_second")
    log.info(
        "model %s: %s parameters, %s M MAC/s",
        name,
        format(card.get("params") or 0, ","),
        "?" if macs is None else f"{macs / 1e6:.2f}",
    )


def _fmt(value: Any) -> str:
    number = float(value.item() if torch.is_tensor(value) else value)
    return f"{number:.2f}" if math.isfinite(number) else "-"


class ValidationReport(Callback):
    """Logs ``val/CER`` and ``val_continuous/CER`` after each validation (console and
    ``train.log``) and warns when training ends without a single validation."""

    KEYS = ("val/CER", "val_continuous/CER", "val/loss")

    def __init__(self) -> None:
        self.validations = 0

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        found = {k: _fmt(metrics[k]) for k in self.KEYS if k in metrics}
        if not found:
            return
        self.validations += 1
        log.info(
            "validation epoch %d (step %d): %s",
            trainer.current_epoch,
            trainer.global_step,
            ", ".join(f"{k} {v}" for k, v in found.items()),
        )

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero and self.validations == 0:
            log.warning(
                "training ended without any validation: no val/CER was measured, so the "
                "evaluated checkpoint is the last one, not the best. Validation runs every "
                "trainer.check_val_every_n_epoch=%s epochs (max_epochs=%s); check also "
                "limit_val_batches and that the split has val sessions.",
                trainer.check_val_every_n_epoch,
                trainer.max_epochs,
            )
