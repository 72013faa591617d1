"""The Lightning side of a run: loggers, callbacks and the Trainer from the run config.

Checkpoints: ``<run dir>/checkpoints/`` holds the best ``val/CER`` (``monitor_metric``) and
``val_continuous/CER`` checkpoints plus ``last.ckpt`` (every epoch end and periodically, see
:mod:`emg2qwerty_ssm.resume`), all written atomically with checksums.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emg2qwerty_ssm.elastic_threads import elastic_threads_callback
from emg2qwerty_ssm.resume import DEFAULT_EVERY_SECONDS, AtomicCheckpointIO, LastCheckpoint

__all__ = ["CHECKPOINT_DIR_NAME", "build_callbacks", "build_loggers", "build_trainer"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR_NAME = "checkpoints"
VAL_CONTINUOUS_CER = "val_continuous/CER"  # the paper protocol's validation metric


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """The configured loggers (``cfg.logger``: name -> ``_target_`` node), saving in the run dir."""
    from hydra.utils import instantiate

    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None or "_target_" not in node:
            continue
        log.debug("logger %s", name)
        loggers.append(instantiate(node, save_dir=str(run_dir)))
    return loggers


def build_callbacks(cfg: DictConfig, run_dir: Path, has_logger: bool) -> list[Any]:
    """Checkpointing, early stopping, LR monitor, progress bar, elastic threads and
    ``cfg.callbacks``."""
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
        RichProgressBar,
        TQDMProgressBar,
    )

    ckpt_dir = run_dir / CHECKPOINT_DIR_NAME
    mode = str(cfg.monitor_mode)
    monitor = str(cfg.monitor_metric)
    best = [(monitor, "valcont_{epoch}" if monitor == VAL_CONTINUOUS_CER else "val_{epoch}", mode)]
    if monitor != VAL_CONTINUOUS_CER:  # the paper's 80 s protocol is kept too; Lightning
        best.append((VAL_CONTINUOUS_CER, "valcont_{epoch}", "min"))  # refuses two per metric
    callbacks: list[Any] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename=filename,
            monitor=metric,
            mode=metric_mode,
            auto_insert_metric_name=False,
        )
        for metric, filename, metric_mode in best
    ]
    # last.ckpt at every epoch end and periodically, improvement or not (emg2qwerty_ssm.resume)
    periodic = cfg.get("checkpointing") or {}
    callbacks.append(
        LastCheckpoint(
            ckpt_dir,
            every_n_train_steps=periodic.get("every_n_train_steps"),
            every_seconds=periodic.get("every_seconds", DEFAULT_EVERY_SECONDS),
        )
    )
    stop = cfg.get("early_stopping")
    if stop:
        callbacks.append(
            EarlyStopping(
                monitor=str(stop.get("monitor", cfg.monitor_metric)),
                mode=str(stop.get("mode", mode)),
                patience=int(stop.get("patience", 3)),
                min_delta=float(stop.get("min_delta", 0.0)),
            )
        )
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    bar = str(cfg.get("progress_bar", "rich"))
    if bar == "rich":
        callbacks.append(RichProgressBar())
    elif bar == "tqdm":
        callbacks.append(TQDMProgressBar())
    elastic = elastic_threads_callback(cfg)  # make pareto's core handover (elastic_threads.py)
    if elastic is not None:
        callbacks.append(elastic)
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None:
            log.debug("extra callback %s", name)
            callbacks.append(instantiate(node))
    return callbacks


def build_trainer(
    cfg: DictConfig, run_dir: Path, loggers: list[Any], extra_callbacks: Sequence[Any] = ()
) -> Any:
    """The Lightning Trainer of ``cfg.trainer`` with this project's callbacks and plugins."""
    import lightning.pytorch as pl

    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(trainer_cfg, dict)
    kwargs = {str(k): v for k, v in trainer_cfg.items() if v is not None}
    kwargs.setdefault("enable_model_summary", False)  # logs.log_model_card says it better
    bar = str(cfg.get("progress_bar", "rich"))
    curriculum = (cfg.datamodule.get("train_on_longer") or {}).get("every", 0)
    # every checkpoint written atomically with checksums, read back safely and verified
    kwargs.setdefault("plugins", [AtomicCheckpointIO()])
    return pl.Trainer(
        **kwargs,
        default_root_dir=str(run_dir),
        logger=loggers if loggers else False,
        callbacks=[*build_callbacks(cfg, run_dir, bool(loggers)), *extra_callbacks],
        enable_progress_bar=bar != "none",
        # The curriculum picks the train windows per epoch; the loader must be re-made.
        reload_dataloaders_every_n_epochs=1 if curriculum else 0,
    )
