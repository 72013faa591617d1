"""CER of an exported step on whole sessions, streamed from a zero state, both decoders.

Each session is streamed once from the start (the deployment setting: no windows, no
padding) and decoded with greedy CTC and prefix beam search; the CER is micro-averaged over
the sessions (edit operations summed, divided by the summed target length).
:func:`agreement_cer` compares two precisions' transcripts directly (int8 against fp32 as
the target): a measure of what quantisation changes that needs no well-trained model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from emg2qwerty_ssm.export.common import Session

Runner = Callable[[torch.Tensor], np.ndarray]  # emg (T, bands, electrodes) -> (T', K) log-probs
DECODERS = ("greedy", "beam")


def transcribe(
    run: Runner,
    sessions: Sequence[Session],
    lm_path: str | os.PathLike | None = None,
    beam_size: int = 50,
) -> dict[str, list[str]]:
    """``{decoder: [decoded text per session]}`` for the greedy and the beam decoder."""
    from emg2qwerty_ssm.decoding import CTCBeamDecoder, CTCGreedyDecoder

    decoders = {
        "greedy": CTCGreedyDecoder(),
        "beam": CTCBeamDecoder(beam_size=beam_size, lm_path=lm_path),
    }
    texts: dict[str, list[str]] = {name: [] for name in decoders}
    for session in sessions:
        emissions = np.asarray(run(session.emg), dtype=np.float32)
        for name, decoder in decoders.items():
            decoder.reset()
            prediction = decoder.decode(emissions, np.arange(len(emissions)), finish=True)
            texts[name].append(str(prediction))
    return texts


def cer(predictions: Sequence[str], targets: Sequence[str]) -> float | None:
    """Micro-averaged CER in percent; None when all targets are empty."""
    from emg2qwerty_ssm.metrics import CharacterErrorRates

    metric = CharacterErrorRates(sync_on_compute=False)
    for prediction, target in zip(predictions, targets, strict=True):
        metric.update(prediction=prediction, target=target)
    try:
        value = float(metric.compute()["CER"])
    except (ZeroDivisionError, ValueError, RuntimeError):
        return None
    return value if np.isfinite(value) else None


def measure_cer(
    runs: Mapping[str, Runner],
    sessions: Sequence[Session],
    lm_path: str | os.PathLike | None = None,
    beam_size: int = 50,
) -> dict[str, dict[str, float | None]]:
    """``{precision: {decoder: CER}}`` against the sessions' text for each runner in ``runs``,
    plus ``"int8_vs_fp32"`` (int8 transcripts scored against the fp32 ones) when both exist."""
    targets = [s.text for s in sessions]
    texts = {p: transcribe(run, sessions, lm_path, beam_size) for p, run in runs.items()}
    out = {p: {d: cer(t[d], targets) for d in DECODERS} for p, t in texts.items()}
    if "fp32" in texts and "int8" in texts:
        out["int8_vs_fp32"] = {d: cer(texts["int8"][d], texts["fp32"][d]) for d in DECODERS}
    return out
