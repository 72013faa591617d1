"""Shared fixtures. The reference material lives in ../shared/reference beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DIR = Path(
    os.environ.get("EMG2QWERTY_SSM_REFERENCE", REPO_ROOT.parent / "shared" / "reference")
)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference material not found at {REFERENCE_DIR}")
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
