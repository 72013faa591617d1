"""Shared fixtures. Reference data (a session, decoder cases, checkpoints, splits) lives in
``tests/fixtures/``; ``EMG2QWERTY_SSM_REFERENCE`` points the tests at another copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
REFERENCE_DIR = Path(os.environ.get("EMG2QWERTY_SSM_REFERENCE", FIXTURES_DIR))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Folder with ``sessions/``, ``decoding/``, ``seed_checkpoint/``, ``baseline_checkpoint/``
    and ``splits/`` (see tests/fixtures/README.md). Missing data is an error, not a skip: the
    fixtures are part of the repository."""
    if not REFERENCE_DIR.is_dir():
        raise FileNotFoundError(
            f"reference fixtures not found at {REFERENCE_DIR} "
            "(tests/fixtures/ of the repository, or $EMG2QWERTY_SSM_REFERENCE)"
        )
    return REFERENCE_DIR


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch() -> None:
    # Two xdist workers on two cores: one intra-op thread each avoids oversubscription.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def baseline_checkpoint_dir() -> Path:
    """emg2qwerty's TDSConvCTCModule checkpoint (random weights) and its reference emissions."""
    path = REFERENCE_DIR / "baseline_checkpoint"
    if not path.is_dir():
        pytest.skip(f"baseline checkpoint fixture not found at {path}")
    return path
