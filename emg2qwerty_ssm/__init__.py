"""emg2qwerty-ssm: S4D and hybrid two-stage networks for sEMG typing decoding."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__version__ = "0.1.0"

#: the repository's conf/ directory (Hydra config root)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_model(
    path: str | Path, map_location: str = "cpu", trust_pickle: bool = False
) -> torch.nn.Module:
    """Load a model (eval mode) from a project checkpoint or a seed-format Lightning checkpoint.

    ``trust_pickle=True`` lifts the safe-loading allow-list: only for files you trust.
    """
    from emg2qwerty_ssm.models.checkpoints import load_model as _load_model

    return _load_model(path, map_location=map_location, trust_pickle=trust_pickle)
