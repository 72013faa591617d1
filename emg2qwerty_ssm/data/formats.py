"""Session file formats: how a dataset's session files are found, windowed and checked.

A dataset config names its format (``conf/dataset/<name>.yaml``: ``format: {_target_: ...}``);
the datamodule cuts windows with it and the split checks validate files with it. A dataset in
another file format is one class with these three members plus one YAML (docs/extending.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the split checks use formats without importing torch
    from torch.utils.data import Dataset

__all__ = ["Emg2QwertyHDF5", "SessionFormat", "session_file"]


@runtime_checkable
class SessionFormat(Protocol):
    """What the datamodule and the split checks need from a session file format."""

    #: file name suffix of a session: ``<root>/<session><suffix>``
    suffix: str

    def windows(
        self,
        path: Path,
        window_length: int | None,
        padding: Sequence[int],
        jitter: bool,
        transform: Any,
        skip_if_too_short: bool,
    ) -> Dataset:
        """Fixed-length windows of one session: item i -> (inputs (T_i, ...), labels (S_i,)).

        ``window_length=None``: one window of the whole session. A window longer than the
        session raises :class:`~emg2qwerty_ssm.data.session.SessionTooShortError` unless
        ``skip_if_too_short`` (then 0 windows).
        """
        ...

    def validate(self, path: Path, full: bool) -> list[str]:
        """Problems of one session file (empty = fine); ``full``: read every sample."""
        ...


class Emg2QwertyHDF5:
    """emg2qwerty's HDF5 sessions (docs/format.md): :class:`WindowedEMGDataset` windows and
    :func:`~emg2qwerty_ssm.data.checks.validate_session` checks."""

    suffix = ".hdf5"

    def windows(
        self,
        path: Path,
        window_length: int | None,
        padding: Sequence[int],
        jitter: bool,
        transform: Any,
        skip_if_too_short: bool,
    ) -> Dataset:
        from emg2qwerty_ssm.data.windows import WindowedEMGDataset

        return WindowedEMGDataset(
            path,
            window_length=window_length,
            padding=padding,
            jitter=jitter,
            transform=transform,
            skip_if_too_short=skip_if_too_short,
        )

    def validate(self, path: Path, full: bool) -> list[str]:
        from emg2qwerty_ssm.data.checks import validate_session

        return validate_session(path, full=full)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def session_file(root: str | os.PathLike[str], session: str, fmt: SessionFormat) -> Path:
    """``root / (session + fmt.suffix)``."""
    return Path(root) / f"{session}{fmt.suffix}"
