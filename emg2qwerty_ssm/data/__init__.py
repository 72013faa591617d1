"""The emg2qwerty data layer, one module per concept:

- :mod:`.session`: session files (:class:`EMGSessionData`, :func:`session_path`, errors);
- :mod:`.labels`: :class:`LabelData` (keystroke / prompt text and timestamps);
- :mod:`.windows`: :class:`WindowedEMGDataset` (fixed-length windows + labels);
- :mod:`.collate`: zero-padded time-first batches;
- :mod:`.splits`: split files, their resolution from the run config and their checks;
- :mod:`.metadata`: ``metadata.csv`` and per-user statistics;
- :mod:`.problems`: :class:`DatasetError` (every problem of a dataset at once).

Public names and call signatures are emg2qwerty's (``from emg2qwerty_ssm.data import
LabelData`` where emg2qwerty has ``from emg2qwerty.data import LabelData``). The names are
loaded on first use (PEP 562), so that the split checks and the command-line validator do not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule that defines it
_HOMES = {
    "EMGSessionData": "session",
    "SessionFormatError": "session",
    "SessionTooShortError": "session",
    "session_path": "session",
    "LabelData": "labels",
    "WindowedEMGDataset": "windows",
    "collate_windows": "collate",
    "load_split": "splits",
    "METADATA_COLUMNS": "metadata",
    "dataset_stats": "metadata",
    "read_metadata": "metadata",
    "scan_sessions": "metadata",
    "DatasetError": "problems",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
