"""The trainer's malloc setting: freed activations are reused without new page faults."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from emg2qwerty_ssm.host_memory import ENV_VAR, retain_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_opt_out_leaves_malloc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "default")
    assert retain_freed_memory() is False


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_freed_memory_is_reused_without_page_faults() -> None:
    assert retain_freed_memory() is True
    n = 48 << 18  # 48 MiB of float32: above glibc's default (dynamic) mmap limit of 32 MiB
    faults = []
    for _ in range(20):  # allocated, written, freed: as every training step does
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(n).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    # glibc's heap settles after a few aligned blocks; with the default settings each block
    # is unmapped on free and all 12,288 of its 4 KiB pages fault again every time
    assert sum(faults[10:]) < 5 * 12288, faults
