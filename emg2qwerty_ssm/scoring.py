"""Emissions -> decode -> score: the one path from model outputs to character error rates.

Used by the Lightning module (training and validation batches) and by the final evaluation of
a whole split (:func:`evaluate_loader`). Emissions are converted from torch to numpy once, here,
and handed to a decoder (:class:`~emg2qwerty_ssm.decoding.base.BatchDecoder`); targets become
:class:`~emg2qwerty_ssm.data.LabelData`; a :class:`~emg2qwerty_ssm.metrics.CharacterErrorRates`
accumulates the edit counts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.data import LabelData
from emg2qwerty_ssm.decoding.base import BatchDecoder
from emg2qwerty_ssm.metrics import CharacterErrorRates

if TYPE_CHECKING:
    from emg2qwerty_ssm.models.model import EMGModel

__all__ = [
    "compute_cer",
    "decode_and_score",
    "decoder_name",
    "default_decoder",
    "evaluate_loader",
    "target_label_data",
]


def decoder_name(decoder_cfg: Mapping[str, Any] | None) -> str:
    """Short decoder name for metric keys: ``greedy`` / ``beam`` (from ``name`` or the class)."""
    if not decoder_cfg:
        return "greedy"
    if decoder_cfg.get("name"):
        return str(decoder_cfg["name"])
    target = str(decoder_cfg.get("_target_", "greedy")).rsplit(".", 1)[-1]
    short = target.removeprefix("CTC").removesuffix("Decoder").lower()
    return short or target.lower()


def default_decoder() -> BatchDecoder:
    """The greedy CTC decoder (used when no decoder is configured)."""
    from emg2qwerty_ssm.decoding import CTCGreedyDecoder

    return CTCGreedyDecoder()


def target_label_data(targets: torch.Tensor, target_lengths: torch.Tensor) -> list[LabelData]:
    """Padded targets ``(S, N)`` and their lengths ``(N,)`` -> N LabelData (blanks dropped)."""
    blank = charset().null_class
    targets_np = targets.detach().cpu().numpy()
    lengths = target_lengths.detach().cpu().numpy()
    out = []
    for i in range(targets_np.shape[1]):
        labels = targets_np[: int(lengths[i]), i]
        out.append(LabelData.from_labels(labels[labels != blank].astype(np.int32)))
    return out


def decode_and_score(
    decoder: BatchDecoder,
    metric: CharacterErrorRates,
    emissions: torch.Tensor,
    emission_lengths: torch.Tensor,
    targets: torch.Tensor,
    target_lengths: torch.Tensor,
) -> list[tuple[str, str]]:
    """Decode a batch, add it to a CER metric and return its ``(prediction, target)`` texts.

    emissions (T, N, 99) log-probs; emission_lengths (N,); targets (S, N) padded labels;
    target_lengths (N,). Targets are cut to each item's length and stripped of blanks.
    """
    predictions = decoder.decode_batch(
        emissions.detach().float().cpu().numpy(), emission_lengths.detach().cpu().numpy()
    )
    texts = []
    for prediction, target in zip(
        predictions, target_label_data(targets, target_lengths), strict=True
    ):
        metric.update(prediction=prediction, target=target)
        texts.append((prediction.text, target.text))
    return texts


def compute_cer(metric: CharacterErrorRates) -> dict[str, float] | None:
    """The metric's ``{CER, IER, DER, SER}``, or None for an epoch without target characters."""
    try:
        values = metric.compute()
    except (ZeroDivisionError, ValueError, RuntimeError):
        return None
    out = {k: float(v) for k, v in values.items()}
    if not out or not np.isfinite(out.get("CER", np.nan)):
        return None
    return out


# ----------------------------------------------------------------------------- a whole split


@torch.no_grad()
def evaluate_loader(
    model: EMGModel,
    loader: Iterable[Mapping[str, torch.Tensor]],
    decoder: BatchDecoder,
    device: torch.device | str = "cpu",
    texts: list[tuple[str, str]] | None = None,
) -> dict[str, float] | None:
    """Decode every batch of ``loader`` with ``model`` in eval mode.

    Returns the micro-averaged ``{CER, IER, DER, SER}`` of the whole loader.

    A plain loop rather than ``Trainer.test``: it runs on one process whatever strategy
    trained the model (no DistributedSampler padding duplicates into the test set), and the
    protocol a number comes from is explicit in the loader (see
    :mod:`emg2qwerty_ssm.datamodule`). Batches are ``WindowedEMGDataset.collate`` dicts (inputs
    ``(T, N, ...)``). Each window is a separate forward pass, i.e. starts from zero recurrent
    state. Returns None when the loader holds no target characters. ``texts``, if given,
    receives each item's ``(prediction, target)`` texts in loader order. Runs with the
    process's torch threads: more threads for evaluation alone did not pay on the project's
    2-core machine (docs/compute.md#evaluation-threads, benchmarks/bench_eval_threads.py).
    """
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
    sizes = getattr(dataset, "cumulative_sizes", None)  # a ConcatDataset's
    if parts is not None and sizes is not None:
        k = bisect.bisect_right(sizes, index)
        offset = sizes[k - 1] if k else 0
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
