"""The data side of a run: the dataset root (synthetic presets generated on first use), then the
split and its validation (:mod:`emg2qwerty_ssm.data.splits`), all before anything is built or
trained (see docs/reliability.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from emg2qwerty_ssm.data.splits import check_split, resolve_split
from emg2qwerty_ssm.paths import resolve_user_path

log = logging.getLogger(__name__)

__all__ = ["check_split", "prepare_dataset", "resolve_split", "resolve_user_path"]


def prepare_dataset(cfg: DictConfig) -> Path:
    """The dataset root; a synthetic preset is generated there first if it is absent."""
    try:
        root_value = cfg.dataset.root
    except MissingMandatoryValue:
        root_value = None
    if not root_value:
        raise ValueError(
            "dataset.root is not set: pass dataset.root=/path/to/emg2qwerty (dataset=real), or "
            "use a synthetic preset (dataset=synthetic_tiny|synthetic_demo|synthetic_full)"
        )
    root = resolve_user_path(str(root_value))
    synthetic = cfg.dataset.get("synthetic")
    if synthetic:
        from emg2qwerty_ssm.synthetic import ensure_dataset

        log.info("synthetic preset %r (seed %s) at %s", synthetic.preset, synthetic.seed, root)
        root = Path(ensure_dataset(str(synthetic.preset), int(synthetic.seed), root))
    return root
