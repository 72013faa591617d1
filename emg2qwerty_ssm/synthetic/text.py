"""Prompt text: four-word lowercase lines from English prose available offline.

Real sessions (docs/synthetic-evidence.md §1 "prompts", computed layout) show: a pangram, 75 lines
of four random dictionary words, the pangram again, 75 consecutive four-word chunks of
Wikipedia text (lowercase with basic punctuation, e.g. "army. the capitalist has"), and
usually a closing pangram. Prompts contain no capitals. We keep that layout, scaled to the
session length, and take the English from the docstrings of a fixed list of Python
standard-library modules (parsed with ``ast``, never imported) or from a user-provided text
file.
"""

from __future__ import annotations

import ast
import codecs
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["PANGRAM", "Corpus", "load_corpus", "session_lines"]

PANGRAM = "the quick brown fox jumps over a lazy dog"

# Prose-heavy standard-library modules; a fixed list keeps the corpus stable for a Python
# version. `this.py` holds the Zen of Python, ROT13-encoded.
_STDLIB_MODULES = (
    "argparse.py",
    "textwrap.py",
    "subprocess.py",
    "difflib.py",
    "random.py",
    "threading.py",
    "doctest.py",
    "tarfile.py",
    "this.py",
)
# A prose token: lowercase letters with an optional internal apostrophe, then optional . or ,
_TOKEN = re.compile(r"^[a-z]+(?:'[a-z]+)?[.,]?$")
_STRIP = '"()[]{}`*:;!?'


@dataclass(frozen=True)
class Corpus:
    """``words``: distinct dictionary words; ``chunks``: consecutive four-word prose chunks."""

    words: tuple[str, ...]
    chunks: tuple[str, ...]


def _tokens_from_text(text: str) -> list[str | None]:
    """Prose tokens, with None where a non-prose token (code, numbers) breaks the text."""
    out: list[str | None] = []
    for raw in text.split():
        token = raw.strip(_STRIP)
        # Capitalised sentence starts are fine; identifiers (under_scores, a.b, CamelCase) not.
        if token[:1].isupper() and token[1:].islower():
            token = token.lower()
        out.append(token if _TOKEN.match(token) else None)
    return out


def _chunks_and_words(tokens: list[str | None]) -> Corpus:
    chunks: list[str] = []
    run: list[str] = []
    for tok in [*tokens, None]:
        if tok is None:
            chunks.extend(" ".join(run[i : i + 4]) for i in range(0, len(run) - 3, 4))
            run = []
        else:
            run.append(tok)
    words = sorted({t.rstrip(".,") for t in tokens if t and 2 <= len(t.rstrip(".,")) <= 12})
    if len(words) < 20 or len(chunks) < 10:
        raise ValueError(
            f"text source too small: {len(words)} distinct words, {len(chunks)} four-word chunks "
            f"(need >= 20 and >= 10)"
        )
    return Corpus(tuple(words), tuple(chunks))


def _stdlib_docstrings() -> str:
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    for name in _STDLIB_MODULES:
        path = lib / name
        if not path.is_file():
            continue
        source = path.read_text(encoding="utf-8", errors="replace")
        if name == "this.py":
            tree = ast.parse(source)
            # The only long string constant is the encoded Zen text.
            parts += [
                codecs.decode(node.value, "rot13")
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and len(node.value) > 200
            ]
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(doc)
    return "\n".join(parts)


@lru_cache(maxsize=4)
def load_corpus(text_file: str | None = None) -> Corpus:
    """The word/chunk corpus from ``text_file`` (UTF-8 prose) or the stdlib docstrings."""
    if text_file is not None:
        path = Path(text_file)
        if not path.is_file():
            raise FileNotFoundError(f"--text-file {path}: no such file")
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            return _chunks_and_words(_tokens_from_text(text))
        except ValueError as err:
            raise ValueError(f"--text-file {path}: {err}") from None
    return _chunks_and_words(_tokens_from_text(_stdlib_docstrings()))


def session_lines(corpus: Corpus, rng: np.random.Generator, n_lines: int) -> Iterator[str]:
    """Prompt lines in the real session layout, scaled so ``n_lines`` covers the session.

    Pangram, random-word lines (first half), pangram, consecutive prose chunks (second
    half), closing pangram; then more prose chunks if the typist is faster than expected.
    """
    half = max(1, (n_lines - 3) // 2)
    yield PANGRAM
    for _ in range(half):
        yield " ".join(corpus.words[i] for i in rng.integers(0, len(corpus.words), 4))
    yield PANGRAM
    start = int(rng.integers(0, len(corpus.chunks)))
    for i in range(half):
        yield corpus.chunks[(start + i) % len(corpus.chunks)]
    yield PANGRAM
    i = half
    while True:
        yield corpus.chunks[(start + i) % len(corpus.chunks)]
        i += 1
