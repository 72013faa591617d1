"""Shared helpers of the trainer tests: compose the project config, run train(cfg) on the tiny
synthetic preset (generated once per test session into a shared cache; ensure_dataset locks)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from emg2qwerty_ssm import CONFIG_DIR

REPO_ROOT = CONFIG_DIR.parent


def cache_dir(tmp_path_factory) -> Path:
    """One synthetic cache per pytest run, shared by the xdist workers."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if base.name.startswith("popen-") else base
    path = root / "emg2qwerty_cache"
    path.mkdir(exist_ok=True)
    return path


def compose_cfg(
    overrides: Sequence[str] = (), run_dir: Path | None = None, cache: Path | None = None
) -> DictConfig:
    """The composed config (as the Hydra app would see it) with a run dir and cache set."""
    extra = []
    if cache is not None:
        extra.append(f"paths.cache_dir={cache}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*extra, *overrides])
    if run_dir is not None:
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
    return cfg


def run_cli(args: Sequence[str], cache: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m emg2qwerty_ssm.train ARGS`` in a subprocess (cwd = repository)."""
    env = dict(os.environ)
    env.update(
        EMG2QWERTY_SSM_CACHE=str(cache),
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "emg2qwerty_ssm.train", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
