"""Keystroke and prompt labels: :class:`LabelData` (emg2qwerty's class, same signatures).

``labels`` is the (S,) int32 array of charset class indices (S = label sequence length).
Differences from emg2qwerty (docs/data.md): timestamps that go backwards log a warning
instead of failing an assertion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from emg2qwerty_ssm.charset import CharacterSet, charset

__all__ = ["LabelData"]

log = logging.getLogger(__name__)


class LabelData:
    """Text in charset characters plus, optionally, one timestamp per character.

    ``labels`` is the (S,) int32 array of class indices. Two LabelData are equal when their
    texts are equal; ``+`` concatenates texts and timestamps (timestamps are kept only when
    both sides have them).
    """

    def __init__(
        self,
        text: str,
        timestamps: Sequence[float] | np.ndarray | None = None,
        _charset: CharacterSet | None = None,
        *,
        _timestamps: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if _timestamps is not None:  # emg2qwerty's keyword name for the same argument
            timestamps = _timestamps
        self.text = text
        self._charset = _charset or charset()
        self.timestamps = None
        if timestamps is not None:
            ts = np.asarray(timestamps)  # integer frame indices stay integers, as in emg2qwerty
            if ts.dtype.kind not in "iuf":
                ts = ts.astype(np.float64)
            if ts.ndim != 1 or len(ts) != len(text):
                raise ValueError(
                    f"LabelData: {len(text)} characters but timestamps of shape {ts.shape}"
                )
            if len(ts) > 1 and not (np.diff(ts) >= 0).all():
                # emg2qwerty asserts here; the paper's code only warns, and so do we.
                log.warning("LabelData: character timestamps are not monotonic (text %r)", text)
            self.timestamps = ts

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_keystrokes(
        cls,
        keystrokes: Sequence[Mapping[str, Any]],
        start_t: float = -np.inf,
        end_t: float = np.inf,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Keys pressed in [start_t, end_t], walking the list in order.

        The walk stops at the first key with ``start > end_t``; keys outside the charset
        (ctrl, tab, right shift, ...) are dropped. Each character's timestamp is its key's
        ``start``.
        """
        cs = _charset or charset()
        text: list[str] = []
        stamps: list[float] = []
        for key in keystrokes:
            if key["start"] > end_t:
                break
            if key["start"] >= start_t:
                normalized = cs.normalize_keys([key["key"]])
                if normalized:
                    text.append(cs.key_to_char(normalized[0]))
                    stamps.append(key["start"])
        return cls("".join(text), stamps, cs)

    @classmethod
    def from_key(
        cls,
        key: str | Mapping[str, Any],
        timestamp: float | None = None,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """One keylogger key (a name or a keystroke dict) -> 0 or 1 characters."""
        cs = _charset or charset()
        if isinstance(key, str):
            name = key
        else:
            name = key["key"]
            timestamp = key["start"] if timestamp is None else timestamp
        normalized = cs.normalize_keys([name])
        stamps = None if timestamp is None else ([timestamp] if normalized else [])
        text = cs.key_to_char(normalized[0]) if normalized else ""
        return cls(text, stamps, cs)

    @classmethod
    def from_prompts(
        cls,
        prompts: Sequence[Mapping[str, Any]],
        enforce_newline: bool = True,
        start_t: float = -np.inf,
        end_t: float = np.inf,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Texts of the prompts starting in [start_t, end_t] (walk stops at start > end_t)."""
        cs = _charset or charset()
        out = cls("", None, cs)
        for prompt in prompts:
            if prompt["start"] > end_t:
                break
            if prompt["start"] >= start_t:
                out += cls.from_prompt(prompt, enforce_newline=enforce_newline, _charset=cs)
        return out

    @classmethod
    def from_prompt(
        cls,
        prompt: str | Mapping[str, Any],
        enforce_newline: bool = True,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """One prompt (text or prompt dict) -> cleaned text ending with ⏎; null payload -> ""."""
        cs = _charset or charset()
        if isinstance(prompt, str):
            text: str | None = prompt
        else:
            payload = prompt.get("payload")
            text = payload.get("text") if payload is not None else None
        if text is None:
            return cls("", None, cs)
        text = cs.clean_str(text)
        if enforce_newline and not text.endswith("⏎"):
            text += "⏎"
        return cls(text, None, cs)

    @classmethod
    def from_str(
        cls,
        text: str,
        timestamps: Sequence[float] | None = None,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Free text -> LabelData after ``clean_str`` (``\\n`` becomes ⏎, unknowns dropped)."""
        cs = _charset or charset()
        return cls(cs.clean_str(text), timestamps, cs)

    @classmethod
    def from_labels(
        cls,
        labels: Iterable[int],
        timestamps: Sequence[float] | None = None,
        _charset: CharacterSet | None = None,
    ) -> LabelData:
        """Class indices (S,) -> LabelData."""
        cs = _charset or charset()
        return cls(cs.labels_to_str(labels), timestamps, cs)

    # ------------------------------------------------------------------ views
    @property
    def labels(self) -> np.ndarray:
        """(S,) int32 class indices of ``text``."""
        return np.asarray(self._charset.str_to_labels(self.text), dtype=np.int32)

    def __len__(self) -> int:
        return len(self.text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelData):
            return NotImplemented
        return self.text == other.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __add__(self, other: LabelData) -> LabelData:
        timestamps = None
        if self.timestamps is not None and other.timestamps is not None:
            timestamps = np.append(self.timestamps, other.timestamps)
        return LabelData(self.text + other.text, timestamps, self._charset)

    def __str__(self) -> str:
        return self.text.replace("⏎", "\n")

    def __repr__(self) -> str:
        stamps = "None" if self.timestamps is None else f"<{len(self.timestamps)} stamps>"
        return f"LabelData(text={self.text!r}, timestamps={stamps})"
