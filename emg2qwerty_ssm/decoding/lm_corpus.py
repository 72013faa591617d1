"""Text corpus -> training text for a character LM, with emg2qwerty's preprocessing.

emg2qwerty's ``wikitext-103-6gram-charlm`` was trained on WikiText-103 words (NLTK word
tokenizer), lower-cased, keeping only words made entirely of the charset's letters, one
word per line with its characters as space-separated tokens (``h e l l o``). The resulting
LM has no cross-word n-grams: every word is a sentence ``<s> h e l l o </s>``, which is
how the decoder uses it (non-letters end a word, docs/decoding-rules.md#beam-search).

Words are split here without NLTK: on whitespace, with leading/trailing punctuation
stripped (NLTK splits those off as separate tokens too). A word with punctuation, digits or
non-ASCII letters inside (``e-mail``, ``don't``, ``café``) is dropped, as emg2qwerty drops
it.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator

__all__ = ["char_lm_lines", "is_charset_word"]

_LETTERS = frozenset(string.ascii_lowercase)
_STRIP = string.punctuation + "“”‘’«»…—–"


def is_charset_word(word: str) -> bool:
    """True for a non-empty lower-case word of the letters a-z only."""
    return bool(word) and all(c in _LETTERS for c in word)


def char_lm_lines(lines: Iterable[str]) -> Iterator[str]:
    """Yield one ``"w o r d"`` line per kept word of ``lines`` (in corpus order)."""
    for line in lines:
        for raw in line.split():
            word = raw.strip(_STRIP).lower()
            if is_charset_word(word):
                yield " ".join(word)
