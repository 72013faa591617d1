"""The emg2qwerty character set: 98 keys + the CTC blank (docs/format.md#charset).

Class order: ``a-z`` (0-25), ``A-Z`` (26-51), ``0-9`` (52-61), ``string.punctuation``
(62-93), then ``Key.backspace`` 94, ``Key.enter`` 95, ``Key.space`` 96, ``Key.shift`` 97.
The blank is class 98, so a model emits 99 classes.

Text uses one unicode character per key: the printable characters stand for themselves and
the special keys use the glyphs ⌫ ⏎ (space) ⇧. Keylogger key names (pynput style, e.g.
``"a"``, ``"Key.space"``, ``"Key.shift_r"``) are normalised to the charset's key names; keys
outside the set (ctrl, tab, right shift, arrows, ...) are dropped, as in emg2qwerty.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from functools import lru_cache

from unidecode import unidecode

__all__ = ["CharacterSet", "charset"]

# Special keys that are classes, with the glyph that stands for each in text.
_SPECIAL_KEYS: dict[str, str] = {
    "Key.backspace": "⌫",
    "Key.enter": "⏎",
    "Key.space": " ",
    "Key.shift": "⇧",
}
# Glyphs of keys that are *not* classes; they normalise to a key name and are then dropped.
_OTHER_KEY_GLYPHS: dict[str, str] = {
    "⇥": "Key.tab",
    "⌃": "Key.ctrl",
    "⌘": "Key.cmd",
    "↑": "Key.shift_l",
    "⇡": "Key.shift_r",
}
# Fixed substitutions applied before anything else.
_CHAR_REPLACEMENTS: dict[str, str] = {
    "\n": "⏎",
    "\r": "⏎",
    "\b": "⌫",
    "’": "'",
    "“": '"',
    "”": '"',
    "—": "-",
}


class CharacterSet:
    """Mapping between keys, unicode characters and class labels."""

    def __init__(self) -> None:
        printable = string.ascii_letters + string.digits + string.punctuation
        self._keys: list[str] = list(printable) + list(_SPECIAL_KEYS)
        self._key_to_unicode: dict[str, str] = {c: c for c in printable} | _SPECIAL_KEYS
        self._unicode_to_key: dict[str, str] = {u: k for k, u in self._key_to_unicode.items()}
        self._key_to_label: dict[str, int] = {k: i for i, k in enumerate(self._keys)}
        self._unicode_to_label: dict[str, int] = {
            self._key_to_unicode[k]: i for i, k in enumerate(self._keys)
        }

    # ----------------------------------------------------------------- sizes
    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._key_to_label

    @property
    def num_classes(self) -> int:
        """Number of model outputs: the keys plus the CTC blank."""
        return len(self) + 1

    @property
    def null_class(self) -> int:
        """The CTC blank label (98)."""
        return len(self)

    @property
    def allowed_keys(self) -> tuple[str, ...]:
        return tuple(self._keys)

    @property
    def allowed_unicodes(self) -> tuple[str, ...]:
        return tuple(self._key_to_unicode[k] for k in self._keys)

    # --------------------------------------------------------- single items
    def key_to_unicode(self, key: str) -> str:
        return self._key_to_unicode[key]

    def unicode_to_key(self, char: str) -> str:
        return self._unicode_to_key[char]

    def key_to_label(self, key: str) -> int:
        return self._key_to_label[key]

    def label_to_key(self, label: int) -> str:
        return self._keys[label]

    def unicode_to_label(self, char: str) -> int:
        return self._unicode_to_label[char]

    def label_to_unicode(self, label: int) -> str:
        return self._key_to_unicode[self._keys[label]]

    # ---------------------------------------------------------- normalising
    def _normalize_char(self, char: str) -> str | None:
        """One input character -> an in-set unicode character, or None (dropped)."""
        char = _CHAR_REPLACEMENTS.get(char, char)
        if char in self._unicode_to_label:
            return char
        if char in _OTHER_KEY_GLYPHS:
            return None  # a known key that is not a class (tab, ctrl, ...)
        transliterated = unidecode(char)
        if len(transliterated) == 1 and transliterated in self._unicode_to_label:
            return transliterated
        return None

    def clean_str(self, text: str) -> str:
        """Normalise ``text`` and drop every character outside the set."""
        return "".join(c for c in map(self._normalize_char, text) if c is not None)

    def normalize_keys(self, keys: Iterable[str]) -> list[str]:
        """Keylogger key names -> charset key names; out-of-set keys are dropped.

        A name already in the set is kept; a single character goes through string
        normalisation (so ``" "`` becomes ``Key.space`` and ``’`` becomes ``'``); any other
        multi-character name (``Key.shift_r``, ``Key.ctrl``, ...) is dropped.
        """
        out: list[str] = []
        for key in keys:
            if key in self._key_to_label:
                out.append(key)
            elif len(key) == 1:
                char = self._normalize_char(key)
                if char is not None:
                    out.append(self._unicode_to_key[char])
        return out

    # ------------------------------------------------------------ sequences
    def str_to_keys(self, text: str) -> list[str]:
        return [self._unicode_to_key[c] for c in self.clean_str(text)]

    def keys_to_str(self, keys: Iterable[str]) -> str:
        return "".join(self._key_to_unicode[k] for k in keys)

    def str_to_labels(self, text: str) -> list[int]:
        return [self._unicode_to_label[c] for c in self.clean_str(text)]

    def labels_to_str(self, labels: Iterable[int]) -> str:
        return "".join(self.label_to_unicode(int(label)) for label in labels)

    def keys_to_labels(self, keys: Iterable[str]) -> list[int]:
        return [self._key_to_label[k] for k in keys]

    def labels_to_keys(self, labels: Sequence[int]) -> list[str]:
        return [self._keys[int(label)] for label in labels]


@lru_cache(maxsize=1)
def charset() -> CharacterSet:
    """The shared character set (emg2qwerty's ``charset()``)."""
    return CharacterSet()
