"""The final evaluation of a run and its report: every split x protocol of the configured grid,
the ``results.json`` content and the summary table.

``metrics`` keys are ``<split>/<protocol>/<decoder>`` (:func:`emg2qwerty_ssm.results.metric_key`);
protocols: ``paper`` (chunks, zero state per chunk) and ``session`` (each session whole).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from emg2qwerty_ssm.paths import REPO_DIR
from emg2qwerty_ssm.results import RESULTS_FILE, config_hash, git_commit, metric_key

__all__ = ["build_results", "eval_device", "evaluate_all", "print_summary"]

log = logging.getLogger(__name__)


def eval_device(cfg: DictConfig, trainer: Any | None) -> torch.device:
    """The trainer's device, or without one the configured accelerator's (CPU fallback)."""
    if trainer is not None:
        return trainer.strategy.root_device
    accel = str(cfg.trainer.get("accelerator", "cpu"))
    if accel in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def evaluate_all(
    cfg: DictConfig, module: Any, datamodule: Any, device: torch.device, run_dir: Path
) -> dict:
    """``{"<split>/<protocol>/<decoder>": {CER, IER, DER, SER}}`` for the configured grid;
    the per-session texts go to ``<run_dir>/predictions.jsonl``."""
    from emg2qwerty_ssm.metrics import ALIASES
    from emg2qwerty_ssm.predictions import session_records, write_predictions
    from emg2qwerty_ssm.scoring import decoder_name, evaluate_loader

    dec = decoder_name(OmegaConf.to_container(cfg.decoder, resolve=True))  # type: ignore[arg-type]
    model = module.model.to(device)
    metrics: dict[str, dict[str, float]] = {}
    records: list[dict[str, Any]] = []  # predictions.jsonl: texts and CER per session
    for split in cfg.evaluation.splits:
        if not datamodule.sessions(str(split)):
            continue
        for protocol in cfg.evaluation.protocols:
            t0 = time.time()
            loader = datamodule.eval_dataloader(str(split), str(protocol))
            texts: list[tuple[str, str]] = []
            values = evaluate_loader(model, loader, module.decoder, device, texts=texts)
            key = metric_key(str(split), str(protocol), dec)
            records += session_records(key, loader.dataset, texts)
            shown = {k: round(v, 2) for k, v in (values or {}).items() if k not in ALIASES}
            log.info("%s: %s (%.1f s)", key, shown or None, time.time() - t0)
            if values is not None:
                metrics[key] = values
    write_predictions(run_dir, records)
    return metrics


def build_results(
    cfg: DictConfig,
    name: str,
    card: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]],
    checkpoint: str | None,
    logged: Mapping[str, float],
    split_source: str,
    root: Path,
    module: Any,
) -> dict[str, Any]:
    """The ``results.json`` content of a run (``wall_time_s`` is filled in by the caller)."""
    from emg2qwerty_ssm.scoring import decoder_name

    dec = decoder_name(OmegaConf.to_container(cfg.decoder, resolve=True))  # type: ignore[arg-type]
    test_paper = metrics.get(metric_key("test", "paper", dec), {})
    config = OmegaConf.to_container(cfg, resolve=True)
    return {
        "model": name,
        "params": card.get("params"),
        "macs_per_second": card.get("macs_per_second"),
        "decoder": dec,
        "user": str(cfg.get("user")),
        "metrics": dict(metrics),
        "CER": test_paper.get("CER"),
        "checkpoint": checkpoint,
        "config_hash": config_hash(cfg),
        "git_commit": git_commit(REPO_DIR),
        "wall_time_s": None,
        "config": config,
        "mode": "train" if cfg.train else "evaluate",
        "dataset": {"root": str(root), "split": split_source},
        "protocols": {
            "paper": f"{cfg.evaluation.chunk_length}-sample chunks, zero state per chunk, tail "
            "dropped; a session shorter than a chunk is one whole-session window",
            "session": "each session whole, batch 1 (emg2qwerty)",
        },
        "logged": dict(logged),
        "skipped_steps": int(getattr(module, "skipped_steps", 0)),
        "cost": dict(card),
    }


def print_summary(results: Mapping[str, Any], run_dir: Path) -> None:
    """A rich table: the model's cost and every CER of the run."""
    from rich.console import Console
    from rich.table import Table

    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    macs = results.get("macs_per_second")
    table = Table(
        title=f"{results['model']} · user {results['user']} · "
        f"{num(results.get('params'), ',')} params · "
        f"{num(macs / 1e6 if macs else None, '.2f')} M MAC/s",
        caption=f"{run_dir}/{RESULTS_FILE}",
    )
    # missing/extra/substituted = emg2qwerty's IER/DER/SER (edits from prediction to target)
    rates = ("CER", "missing", "extra", "substituted")
    for col in ("split/protocol/decoder", *rates):
        table.add_column(col, justify="left" if col.startswith("split") else "right")
    for key, values in results["metrics"].items():
        table.add_row(key, *(num(values.get(m), ".2f") for m in rates))
    if results.get("skipped_steps"):
        table.add_row("skipped non-finite steps", str(results["skipped_steps"]), "", "", "")
    Console().print(table)
