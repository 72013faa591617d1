"""A cache of session files that passed the full validation, so each is scanned once.

Keyed by resolved path with the file's size and mtime: a file that changes (rewritten, touched,
copied over) has no valid stamp and is read again. Only stdlib imports (the validator's command
line starts quickly).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ValidationStamps"]


class ValidationStamps:
    """Files that passed the full validation, keyed by resolved path -> [size, mtime_ns].

    Stored as JSON at ``path`` (written atomically); a changed file (size or mtime) has no
    valid stamp and is scanned again. ``VERSION`` invalidates stamps when the checks change.
    """

    VERSION = 2

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._dirty = False
        try:
            data = json.loads(self.path.read_text())
            ok = isinstance(data, dict) and data.get("version") == self.VERSION
            self._stamps: dict[str, list[int]] = dict(data.get("files", {})) if ok else {}
        except (OSError, ValueError):
            self._stamps = {}

    @staticmethod
    def _key(path: Path) -> tuple[str, list[int]]:
        st = path.stat()
        return str(path.resolve()), [st.st_size, st.st_mtime_ns]

    def is_clean(self, path: Path) -> bool:
        key, stamp = self._key(path)
        return self._stamps.get(key) == stamp

    def mark_clean(self, path: Path) -> None:
        key, stamp = self._key(path)
        self._stamps[key] = stamp
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        from emg2qwerty_ssm.atomic_io import atomic_write_text

        body = {"version": self.VERSION, "files": self._stamps}
        try:
            atomic_write_text(self.path, json.dumps(body, indent=0))
        except OSError:  # a read-only cache costs a rescan next time, nothing else
            return
        self._dirty = False
