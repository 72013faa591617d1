"""The emg2qwerty character set: 98 keys + the CTC blank (docs/format.md#charset).

Class order: ``a-z`` (0-25), ``A-Z`` (26-51), ``0-9`` (52-61), ``string.punctuation``
(62-93), then ``Key.backspace`` 94, ``Key.enter`` 95, ``Key.space`` 96, ``Key.shift`` 97.
The blank is class 98, so a model emits 99 classes.

Text uses one unicode character per key: the printable characters stand for themselves and
the special keys use the glyphs ⌫ ⏎ (space) ⇧. Keylogger key names (pynput style, e.g.
``"a"``, ``"Key.space"``, ``"Key.shift_r"``) are normalised to the charset's key names; keys
outside the set (ctrl, tab, right shift, arrows, ...) are dropped, as in emg2qwerty.

The public API is emg2qwerty's ``charset`` module (docs/emg2qwerty-api.md): the ``KeyChar``
and ``UniChar`` aliases, the ``CharacterSet`` dataclass with its class tables and its
``_key_to_unicode`` field (key name -> unicode code point, in class order), unicode values as
``int`` code points, and ``charset()``. Lookups are dicts built once in ``__post_init__``
(emg2qwerty scans a tuple per call), which matters because every keystroke goes through here.
"""

from __future__ import annotations

import numbers
import string
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar

from unidecode import unidecode

__all__ = ["CharacterSet", "KeyChar", "UniChar", "charset"]

UniChar = str  # one unicode character
KeyChar = str  # a pynput-style key name: "a", "Key.space", ...

_PRINTABLE = string.ascii_letters + string.digits + string.punctuation


@dataclass
class CharacterSet:
    """Mapping between key names, unicode characters / code points and class labels.

    Args:
        _key_to_unicode: key name -> unicode code point of every class, in class order
            (default: :attr:`KEY_TO_UNICODE`, the 98 emg2qwerty keys).
    """

    #: printable keys and their code points (the key name is the character itself)
    CHAR_TO_UNICODE: ClassVar[list[tuple[UniChar, int]]] = [(c, ord(c)) for c in _PRINTABLE]
    #: the special keys that are classes, with the code point of the glyph standing for each
    MODIFIER_TO_UNICODE: ClassVar[list[tuple[KeyChar, int]]] = [
        ("Key.backspace", 0x232B),  # ⌫
        ("Key.enter", 0x23CE),  # ⏎
        ("Key.space", 0x20),  # a plain space
        ("Key.shift", 0x21E7),  # ⇧
    ]
    #: every class in label order
    KEY_TO_UNICODE: ClassVar[OrderedDict[KeyChar, int]] = OrderedDict(
        CHAR_TO_UNICODE + MODIFIER_TO_UNICODE
    )
    #: characters that stand for a key (some of those keys are not classes: they are dropped)
    UNICHAR_TO_KEY: ClassVar[Mapping[UniChar, KeyChar]] = {
        " ": "Key.space",
        "\r": "Key.enter",
        "\u21e5": "Key.tab",  # ⇥
        "\u21e7": "Key.shift",  # ⇧
        "\u2303": "Key.ctrl",  # ⌃
        "\u2318": "Key.cmd",  # ⌘
        "\u232b": "Key.backspace",  # ⌫
        "\u23ce": "Key.enter",  # ⏎
        "\u2191": "Key.shift_l",  # ↑
        "\u21e1": "Key.shift_r",  # ⇡
    }
    #: fixed substitutions applied before anything else
    CHAR_SUBSTITUTIONS: ClassVar[Mapping[UniChar, UniChar]] = {
        "\n": "⏎",
        "\r": "⏎",
        "\b": "⌫",
        "’": "'",
        "“": '"',
        "”": '"',
        "—": "-",
    }

    _key_to_unicode: OrderedDict[KeyChar, int] = field(
        default_factory=lambda: OrderedDict(CharacterSet.KEY_TO_UNICODE)
    )

    def __post_init__(self) -> None:
        self._keys: tuple[KeyChar, ...] = tuple(self._key_to_unicode)
        self._unicodes: tuple[int, ...] = tuple(int(u) for u in self._key_to_unicode.values())
        self._key_to_label: dict[KeyChar, int] = {k: i for i, k in enumerate(self._keys)}
        self._unicode_to_label: dict[int, int] = {u: i for i, u in enumerate(self._unicodes)}

    def __hash__(self) -> int:
        return hash(self._keys + self._unicodes)

    # ----------------------------------------------------------------- sizes
    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, item: KeyChar | int) -> bool:
        """A key name (``"a"``, ``"Key.space"``) or a unicode code point (``97``)."""
        if isinstance(item, str):
            return item in self._key_to_label
        if isinstance(item, numbers.Integral):
            return int(item) in self._unicode_to_label
        raise ValueError(f"CharacterSet: expected a key name or a code point, got {item!r}")

    @property
    def num_classes(self) -> int:
        """Number of model outputs: the keys plus the CTC blank (99)."""
        return len(self) + 1

    @property
    def null_class(self) -> int:
        """The CTC blank label (98)."""
        return len(self)

    @property
    def allowed_keys(self) -> tuple[KeyChar, ...]:
        return self._keys

    @property
    def allowed_unicodes(self) -> tuple[int, ...]:
        """Code points of the classes, in label order."""
        return self._unicodes

    @property
    def allowed_chars(self) -> tuple[UniChar, ...]:
        """Characters of the classes, in label order."""
        return tuple(chr(u) for u in self._unicodes)

    # --------------------------------------------------------- single items
    def _label_of_key(self, key: KeyChar) -> int:
        try:
            return self._key_to_label[key]
        except KeyError:
            raise ValueError(f"{key!r} is not a key of the character set") from None

    def _label_of_unicode(self, unicode_val: int | UniChar) -> int:
        code = ord(unicode_val) if isinstance(unicode_val, str) else int(unicode_val)
        try:
            return self._unicode_to_label[code]
        except KeyError:
            raise ValueError(f"{unicode_val!r} is not a character of the set") from None

    def key_to_unicode(self, key: KeyChar) -> int:
        """Code point of a key (``"Key.enter"`` -> 0x23CE)."""
        return self._unicodes[self._label_of_key(key)]

    def unicode_to_key(self, unicode_val: int | UniChar) -> KeyChar:
        """Key of a code point (a one-character string is accepted too)."""
        return self._keys[self._label_of_unicode(unicode_val)]

    def key_to_label(self, key: KeyChar) -> int:
        return self._label_of_key(key)

    def label_to_key(self, label: int) -> KeyChar:
        return self._keys[int(label)]

    def unicode_to_label(self, unicode_val: int | UniChar) -> int:
        """Label of a code point (a one-character string is accepted too)."""
        return self._label_of_unicode(unicode_val)

    def label_to_unicode(self, label: int) -> int:
        return self._unicodes[int(label)]

    def key_to_char(self, key: KeyChar) -> UniChar:
        """The character standing for a key in text (``"Key.enter"`` -> ``"⏎"``)."""
        return chr(self.key_to_unicode(key))

    def unicode_to_char(self, unicode_val: int) -> UniChar:
        return chr(unicode_val)

    def label_to_char(self, label: int) -> UniChar:
        return chr(self._unicodes[int(label)])

    # ---------------------------------------------------------- normalising
    def _glyph_key(self, char: UniChar) -> KeyChar | None:
        """Key of an in-set character or of a key glyph; None if it is neither."""
        if char in self._key_to_label:
            return char
        return self.UNICHAR_TO_KEY.get(char)

    def _char_to_key(self, char: UniChar) -> KeyChar | None:
        """One input character -> the charset key it stands for, or None (dropped).

        Fixed substitutions first; a character that is neither in the set nor a key glyph is
        transliterated with unidecode and used only if that gives one such character. Glyphs
        of keys that are not classes (⇥ ⌃ ⌘ ↑ ⇡) end up dropped.
        """
        char = self.CHAR_SUBSTITUTIONS.get(char, char)
        key = self._glyph_key(char)
        if key is None:
            transliterated = unidecode(char)
            if len(transliterated) == 1 and transliterated != char:
                key = self._glyph_key(transliterated)
        return key if key in self._key_to_label else None

    def clean_keys(self, keys: Iterable[KeyChar]) -> list[KeyChar]:
        """Keylogger key names -> charset key names; out-of-set keys are dropped.

        A name already in the set is kept; a single character goes through string
        normalisation (so ``" "`` becomes ``Key.space`` and ``’`` becomes ``'``); any other
        multi-character name (``Key.shift_r``, ``Key.ctrl``, ...) is dropped.
        """
        out: list[KeyChar] = []
        for key in keys:
            if key in self._key_to_label:
                out.append(key)
            elif len(key) == 1:
                normalized = self._char_to_key(key)
                if normalized is not None:
                    out.append(normalized)
        return out

    def normalize_keys(self, keys: Iterable[KeyChar]) -> list[KeyChar]:
        """Same as :meth:`clean_keys` (this project's earlier name)."""
        return self.clean_keys(keys)

    def clean_str(self, unicode_str: str) -> str:
        """Normalise ``unicode_str`` and drop every character outside the set."""
        return self.keys_to_str(self.str_to_keys(unicode_str))

    # ------------------------------------------------------------ sequences
    def str_to_keys(self, unicode_str: str) -> list[KeyChar]:
        """``"the\\x08⏎\\n"`` -> ``['t', 'h', 'e', 'Key.backspace', 'Key.enter', 'Key.enter']``."""
        keys = (self._char_to_key(c) for c in unicode_str)
        return [k for k in keys if k is not None]

    def keys_to_str(self, keys: Iterable[KeyChar]) -> str:
        return "".join(self.key_to_char(k) for k in keys)

    def str_to_labels(self, unicode_str: str) -> list[int]:
        return [self._key_to_label[k] for k in self.str_to_keys(unicode_str)]

    def labels_to_str(self, labels: Iterable[int]) -> str:
        return "".join(self.label_to_char(label) for label in labels)

    def keys_to_labels(self, keys: Iterable[KeyChar]) -> list[int]:
        return [self._label_of_key(k) for k in keys]

    def labels_to_keys(self, labels: Sequence[int]) -> list[KeyChar]:
        return [self._keys[int(label)] for label in labels]

    def __str__(self) -> str:
        return self.keys_to_str(self._keys)


@lru_cache(maxsize=1)
def charset() -> CharacterSet:
    """The shared character set (emg2qwerty's ``charset()``)."""
    return CharacterSet()
