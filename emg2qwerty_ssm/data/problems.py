"""Dataset problems reported all at once: :class:`DatasetError` and the unknown-key check.

A leaf (standard library only) so that the quick command-line validator and the split
resolution can share it without importing torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DatasetError", "unknown_key_problems"]


class DatasetError(ValueError):
    """One or more dataset problems; ``problems`` lists them, one message per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(
            f"{n} dataset problem{'s' * (n != 1)}:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


def unknown_key_problems(mapping: Mapping[str, Any], known: Sequence[str], where: str) -> list[str]:
    """A message per key of ``mapping`` not in ``known`` (with the closest known key)."""
    problems = []
    for key in mapping:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{where}: unknown key '{key}'{hint}; allowed: {', '.join(known)}")
    return problems
