"""Elastic CPU threads: a training job that takes over the cores another job has freed.

``make pareto`` runs its jobs as parallel single-thread streams
(:mod:`emg2qwerty_ssm.pareto_sweep`); when one stream has run all its jobs, its core would sit
idle while another stream's long job (S4_large, ~3x any other size) still trains. The runner
therefore writes each stream's thread budget (an integer) to a file named by the environment
variable :data:`THREADS_FILE_ENV` and raises it when a stream ends; :class:`ElasticThreads`
reads it while the job trains and calls ``torch.set_num_threads``.

Only a config with ``elastic_threads: true`` follows the budget, and only a model whose
training gives the same floats at any thread count may set it: otherwise the result would
depend on when the other stream happened to finish. S4_large is such a model
(:class:`~emg2qwerty_ssm.models.norms.ThreadInvariantLayerNorm`; checked by
``tests/test_thread_invariance.py``); the TC models are not (their small matmuls and
convolutions round differently with two threads), so they keep one thread.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from emg2qwerty_ssm.atomic_io import atomic_write_text

log = logging.getLogger(__name__)

#: the environment variable naming a job's thread budget file (set by the pareto runner)
THREADS_FILE_ENV = "EMG2QWERTY_SSM_THREADS_FILE"


def read_budget(path: Path) -> int | None:
    """The thread count in ``path`` (a positive integer), None when absent or unreadable."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        threads = int(text)
    except ValueError:
        return None
    return threads if threads >= 1 else None


def write_budget(path: Path, threads: int) -> None:
    """Give the job reading ``path`` a budget of ``threads`` (written atomically)."""
    if threads < 1:
        raise ValueError(f"thread budget must be >= 1, got {threads}")
    atomic_write_text(path, f"{threads}\n")


class ElasticThreads(Callback):
    """Follow the thread budget in ``path`` during ``fit``: read at fit start and then at most
    every ``poll_s`` seconds of training; the thread count the job started with comes back
    at teardown (the next job of a Hydra multirun runs in the same process)."""

    def __init__(self, path: Path, poll_s: float = 5.0) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self.start_threads = torch.get_num_threads()
        self._last_poll = float("-inf")

    def _follow(self) -> None:
        self._last_poll = time.monotonic()
        budget = read_budget(self.path)
        current = torch.get_num_threads()
        if budget is not None and budget != current:
            torch.set_num_threads(budget)
            log.info("CPU threads %d -> %d (budget %s)", current, budget, self.path.name)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:  # noqa: D102
        self.start_threads = torch.get_num_threads()
        self._follow()

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        if time.monotonic() - self._last_poll >= self.poll_s:
            self._follow()

    def teardown(self, trainer: Any, pl_module: Any, stage: str | None = None) -> None:  # noqa: D102
        if torch.get_num_threads() != self.start_threads:
            torch.set_num_threads(self.start_threads)


def elastic_threads_callback(cfg: Any) -> ElasticThreads | None:
    """The callback when the config asks for it (``elastic_threads: true``) and a budget file
    is named in the environment; None otherwise."""
    path = os.environ.get(THREADS_FILE_ENV)
    if not cfg.get("elastic_threads") or not path:
        return None
    return ElasticThreads(Path(path))
