"""US QWERTY geometry and the standard touch-typing finger map.

The finger assignment is the one in docs/synthetic-evidence.md §3 ("Finger-to-key assignment"):
little q a z / p ; / ' [ ] Enter Backspace, ring w s x / o l ., middle e d c / i k ,,
index r f v t g b / y h n u j m, thumb space. Key positions (row, column in key units with
the usual row stagger) give the "adjacent key" relation used for substitution typos and the
row / lateral reach that makes keys of one finger differ slightly in their EMG (Soechting &
Flanders 1992, quoted in docs/synthetic-evidence.md §3).

Key names are the keylogger's pynput-style names (docs/format.md#session-files): single characters
for printable keys and ``Key.space`` / ``Key.enter`` / ``Key.backspace`` for special keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "FINGERS",
    "HANDS",
    "Key",
    "KEYS",
    "KEY_INDEX",
    "SPACE",
    "ENTER",
    "BACKSPACE",
    "adjacent_keys",
    "char_to_key",
]

SPACE = "Key.space"
ENTER = "Key.enter"
BACKSPACE = "Key.backspace"

HANDS = ("left", "right")
# Finger order is the anatomical order thumb..little, so "neighbouring finger" = index +-1.
FINGERS = ("thumb", "index", "middle", "ring", "little")


@dataclass(frozen=True)
class Key:
    """One key: its name, the hand/finger that types it and its position.

    ``row`` is relative to the home row (-1 = one row up, +1 = one row down, -2 = number
    row); ``lateral`` is the sideways reach away from the finger's home column in key units
    (positive = away from the hand's centre line is *not* implied; it is just the column
    offset, which is what changes wrist deviation).
    """

    name: str
    hand: int  # 0 = left, 1 = right
    finger: int  # index into FINGERS
    x: float  # column position in key units (with row stagger)
    y: float  # row position (0 = number row, 1 = top letter row, 2 = home, 3 = bottom, 4 = space)
    row: float
    lateral: float


# (row y, stagger x0, characters) of the letter rows.
_ROWS = (
    (1, 1.5, "qwertyuiop[]"),
    (2, 1.75, "asdfghjkl;'"),
    (3, 2.25, "zxcvbnm,./"),
)
# Finger of each printable key: (hand, finger).
_FINGER_OF: dict[str, tuple[int, int]] = {}
for _chars, _hand, _finger in (
    ("qaz", 0, 4),
    ("wsx", 0, 3),
    ("edc", 0, 2),
    ("rfvtgb", 0, 1),
    ("yhnujm", 1, 1),
    ("ik,", 1, 2),
    ("ol.", 1, 3),
    ("p;/'[]", 1, 4),
):
    for _c in _chars:
        _FINGER_OF[_c] = (_hand, _finger)
# Home column (x of the home-row key) of each (hand, finger), for the lateral reach.
_HOME_KEY = {(0, 4): "a", (0, 3): "s", (0, 2): "d", (0, 1): "f"}
_HOME_KEY |= {(1, 1): "j", (1, 2): "k", (1, 3): "l", (1, 4): ";"}


def _build_keys() -> tuple[Key, ...]:
    pos: dict[str, tuple[float, float]] = {}
    for y, x0, chars in _ROWS:
        for i, c in enumerate(chars):
            pos[c] = (x0 + i, float(y))
    keys: list[Key] = []
    for c, (x, y_row) in pos.items():
        hand, finger = _FINGER_OF[c]
        home_x = pos[_HOME_KEY[(hand, finger)]][0]
        keys.append(Key(c, hand, finger, x, y_row, row=y_row - 2.0, lateral=x - home_x))
    home_little_x = pos[";"][0]
    # Enter sits right of ' on the home row; Backspace at the right end of the number row.
    keys.append(Key(ENTER, 1, 4, 13.0, 2.0, row=0.0, lateral=13.0 - home_little_x))
    keys.append(Key(BACKSPACE, 1, 4, 14.0, 0.0, row=-2.0, lateral=14.0 - home_little_x))
    # Space: the thumb; the hand is chosen per user / per keystroke (see typing.py).
    keys.append(Key(SPACE, 1, 0, 7.5, 4.0, row=2.0, lateral=0.0))
    return tuple(keys)


KEYS: tuple[Key, ...] = _build_keys()
KEY_INDEX: dict[str, int] = {k.name: i for i, k in enumerate(KEYS)}


def char_to_key(char: str) -> str:
    """A prompt character -> the keylogger name of the key that types it."""
    if char == " ":
        return SPACE
    if char in ("\n", "⏎"):
        return ENTER
    if char not in KEY_INDEX:
        raise ValueError(f"character {char!r} has no key in the synthetic keyboard")
    return char


@lru_cache(maxsize=1)
def _adjacency() -> dict[str, tuple[str, ...]]:
    letters = [k for k in KEYS if len(k.name) == 1]
    xy = np.array([[k.x, k.y] for k in letters])
    dist = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)
    out: dict[str, tuple[str, ...]] = {}
    for i, k in enumerate(letters):
        near = [letters[j].name for j in np.flatnonzero((dist[i] > 0) & (dist[i] < 1.3))]
        out[k.name] = tuple(n for n in near if n.isalpha()) or tuple(near)
    return out


def adjacent_keys(name: str) -> tuple[str, ...]:
    """Letter keys physically next to ``name`` (for adjacent-key substitution typos)."""
    return _adjacency().get(name, ())
