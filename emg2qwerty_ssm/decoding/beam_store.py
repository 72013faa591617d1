"""Flat, growable stores of the beam decoder's paths (prefix trie and label chains).

Structure-of-arrays storage with amortised doubling, and the ancestor closure used to compact
a store to the rows the beam still references (so long online sessions run in bounded memory).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Store", "ancestors"]


class Store:
    """Growable structure-of-arrays (one numpy array per field, amortised doubling)."""

    def __init__(self, **dtypes: type) -> None:
        self.size = 0
        self.cols: dict[str, np.ndarray] = {
            name: np.zeros(64, dtype=dt) for name, dt in dtypes.items()
        }

    def alloc(self, n: int) -> np.ndarray:
        start = self.size
        self.size += n
        cap = len(next(iter(self.cols.values())))
        if self.size > cap:
            new_cap = max(2 * cap, self.size)
            for name, arr in self.cols.items():
                grown = np.zeros(new_cap, dtype=arr.dtype)
                grown[:start] = arr[:start]
                self.cols[name] = grown
        return np.arange(start, self.size)

    def keep(self, live: np.ndarray) -> None:
        """Keep rows ``live`` (sorted), renumbered 0..len(live)-1 (references not updated)."""
        for name, arr in self.cols.items():
            self.cols[name] = np.concatenate([arr[live], np.zeros(64, dtype=arr.dtype)])
        self.size = len(live)


def ancestors(parent: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Sorted ids of ``start`` and all their ancestors through ``parent`` (-1 = none)."""
    mark = np.zeros(len(parent), dtype=bool)
    frontier = np.unique(start[start >= 0])
    while len(frontier):
        mark[frontier] = True
        frontier = parent[frontier]
        frontier = np.unique(frontier[frontier >= 0])
        frontier = frontier[~mark[frontier]]
    return np.flatnonzero(mark)
