"""Final evaluation: a model, a decoder and a loader -> CER and its missing/extra/substituted parts.

A plain loop rather than ``Trainer.test``: it runs on one process whatever strategy trained the
model (no DistributedSampler padding duplicates into the test set), and the protocol a
number comes from is explicit in the loader (see :mod:`emg2qwerty_ssm.datamodule`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from emg2qwerty_ssm.lightning_module import compute_cer, decode_and_score


@torch.no_grad()
def evaluate_loader(
    model: Any,
    loader: Iterable[Mapping[str, torch.Tensor]],
    decoder: Any,
    device: torch.device | str = "cpu",
    texts: list[tuple[str, str]] | None = None,
) -> dict[str, float] | None:
    """Decode every batch of ``loader`` with ``model`` (an ``EMGModel``) in eval mode.

    Returns the micro-averaged ``{CER, IER, DER, SER}`` of the whole loader.

    Batches are ``WindowedEMGDataset.collate`` dicts (inputs ``(T, N, ...)``). Each window is
    a separate forward pass, i.e. starts from zero recurrent state. Returns None when the
    loader holds no target characters. ``texts``, if given, receives each item's
    ``(prediction, target)`` texts in loader order (for ``predictions.jsonl``).
    """
    from emg2qwerty_ssm.metrics import CharacterErrorRates

    was_training = model.training
    model.eval()
    # Only this process evaluates (DDP rank 0 after fit): never all-reduce the counts.
    metric = CharacterErrorRates(sync_on_compute=False)
    seen = 0  # windows before this batch (the loader is sequential): names a bad session
    try:
        for batch in loader:
            emissions = model(batch["inputs"].to(device))  # (T', N, 99)
            _check_finite(emissions, loader, seen)
            seen += emissions.shape[1]
            lengths = model.emission_lengths(batch["input_lengths"]).clamp(max=emissions.shape[0])
            pairs = decode_and_score(
                decoder, metric, emissions, lengths, batch["targets"], batch["target_lengths"]
            )
            if texts is not None:
                texts.extend(pairs)
    finally:
        model.train(was_training)
    return compute_cer(metric)


def _window_source(loader: Any, index: int) -> str:
    """The session file of window ``index`` of a sequential loader over (Concat)datasets."""
    dataset = getattr(loader, "dataset", None)
    parts = getattr(dataset, "datasets", None)
    if parts is not None:
        k = bisect.bisect_right(dataset.cumulative_sizes, index)
        offset = dataset.cumulative_sizes[k - 1] if k else 0
        dataset, index = parts[k], index - offset
    path = getattr(dataset, "hdf5_path", None)
    return f"session {path} (window {index})" if path is not None else f"window {index}"


def _check_finite(emissions: torch.Tensor, loader: Any, seen: int) -> None:
    """Refuse NaN/Inf emissions (T, N, C), naming the session they came from."""
    bad = ~torch.isfinite(emissions).all(dim=2).all(dim=0)  # (N,)
    if bool(bad.any()):
        column = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"the model produced NaN/Inf emissions for {_window_source(loader, seen + column)}: "
            "its weights or that session's input are non-finite (see docs/reliability.md)"
        )
