"""CER of an exported step on whole sessions, streamed from a zero state, both decoders.

Each session is streamed once from the start (the deployment setting: no windows, no
padding) and decoded with greedy CTC and prefix beam search; the CER is micro-averaged over
the sessions (edit operations summed, divided by the summed target length).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from emg2qwerty_ssm.export.common import Session

Runner = Callable[[torch.Tensor], np.ndarray]  # emg (T, bands, electrodes) -> (T', K) log-probs


def measure_cer(
    run: Runner,
    sessions: Sequence[Session],
    lm_path: str | os.PathLike | None = None,
    beam_size: int = 50,
) -> dict[str, float | None]:
    """``{"greedy": CER, "beam": CER}`` in percent (None when the targets are empty)."""
    from emg2qwerty_ssm.decoding import CTCBeamDecoder, CTCGreedyDecoder
    from emg2qwerty_ssm.metrics import CharacterErrorRates

    decoders = {
        "greedy": CTCGreedyDecoder(),
        "beam": CTCBeamDecoder(beam_size=beam_size, lm_path=lm_path),
    }
    metrics = {name: CharacterErrorRates(sync_on_compute=False) for name in decoders}
    for session in sessions:
        emissions = np.asarray(run(session.emg), dtype=np.float32)
        for name, decoder in decoders.items():
            decoder.reset()
            prediction = decoder.decode(emissions, np.arange(len(emissions)), finish=True)
            metrics[name].update(prediction=prediction, target=session.text)
    out: dict[str, float | None] = {}
    for name, metric in metrics.items():
        try:
            value = float(metric.compute()["CER"])
        except (ZeroDivisionError, ValueError, RuntimeError):
            value = float("nan")
        out[name] = value if np.isfinite(value) else None
    return out
