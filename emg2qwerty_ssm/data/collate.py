"""Batching of variable-length windows into time-first, zero-padded tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["collate_windows"]


def collate_windows(
    samples: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Zero-pads a list of (emg (T_i, ...), labels (S_i,)) into a time-first batch.

    Returns inputs (T_max, N, ...), targets (S_max, N), input_lengths (N,) int32,
    target_lengths (N,) int32.
    """
    inputs = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    return {
        "inputs": torch.nn.utils.rnn.pad_sequence(inputs),
        "targets": torch.nn.utils.rnn.pad_sequence(targets),
        "input_lengths": torch.as_tensor([len(x) for x in inputs], dtype=torch.int32),
        "target_lengths": torch.as_tensor([len(y) for y in targets], dtype=torch.int32),
    }
