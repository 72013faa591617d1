"""Keep freed host memory in the process during training (glibc's malloc on Linux).

A CPU training step allocates and frees the same activations every step (TC_S4_small at batch
8 x 10,000 samples: tensors of 1-6 MB at the encoder's 500 Hz). With glibc's default settings
the freed memory goes back to the kernel (large blocks are ``mmap``-ed and unmapped, the top of
the heap is trimmed), so the next step takes every page again as a fresh page fault: ~5,000
faults and 9-15 ms of kernel time per step were measured there (docs/speed.md). Raising
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` keeps those pages in the process: the resident
memory stays at the peak of a step instead of going down between steps, and no number changes.

Applied by the trainer (:func:`emg2qwerty_ssm.train.train`); ``EMG2QWERTY_SSM_MALLOC=default``
leaves glibc's settings alone. Elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["ENV_VAR", "retain_freed_memory"]

ENV_VAR = "EMG2QWERTY_SSM_MALLOC"
_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap (so they are reused, not unmapped)
MMAP_THRESHOLD = 1 << 30
#: free memory at the heap's top kept up to this size (mallopt takes an int)
TRIM_THRESHOLD = 2**31 - 1


def retain_freed_memory() -> bool:
    """Set glibc's thresholds (see the module docstring); True when they were set."""
    if os.environ.get(ENV_VAR, "").strip().lower() == "default":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mmap_ok and trim_ok
