"""Character error rates (docs/decoding-rules.md#cer): CER, IER, DER, SER, micro-averaged over an
epoch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from rapidfuzz.distance import Levenshtein
from torchmetrics import Metric

if TYPE_CHECKING:
    from emg2qwerty_ssm.data import LabelData

__all__ = ["CharacterErrorRates"]


def _text(value: LabelData | str, name: str) -> str:
    text = value if isinstance(value, str) else getattr(value, "text", None)
    if not isinstance(text, str):
        raise TypeError(
            f"CharacterErrorRates.update: {name} must be LabelData or str, got {value!r}"
        )
    return text


class CharacterErrorRates(Metric):
    """Edit operations turning each prediction into its target, summed over all items.

    ``CER = 100 * (insertions + deletions + substitutions) / total target characters`` and
    IER / DER / SER likewise from one operation type: a micro-average over the epoch, not
    a mean of per-item rates. Texts are compared raw (⌫ and ⇧ are characters). Operations
    come from rapidfuzz's ``Levenshtein.editops(prediction, target)``, whose tie-breaking
    between equal-cost alignments decides the per-type split (the total does not depend
    on it).

    An epoch whose targets are all empty has no defined rate: ``compute`` then returns NaN
    for all four (and counts nothing as an error), rather than dividing by zero.
    """

    full_state_update = False
    higher_is_better = False
    # Sum states registered with add_state (declared for type checkers).
    insertions: torch.Tensor
    deletions: torch.Tensor
    substitutions: torch.Tensor
    target_length: torch.Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("insertions", "deletions", "substitutions", "target_length"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, prediction: LabelData | str, target: LabelData | str) -> None:
        """Add one (prediction, target) pair."""
        pred_text, target_text = _text(prediction, "prediction"), _text(target, "target")
        counts = {"insert": 0, "delete": 0, "replace": 0}
        for op in Levenshtein.editops(pred_text, target_text):
            counts[op.tag] += 1
        self.insertions += counts["insert"]
        self.deletions += counts["delete"]
        self.substitutions += counts["replace"]
        self.target_length += len(target_text)

    def compute(self) -> dict[str, float]:
        total = int(self.target_length)
        if total == 0:
            return {"CER": math.nan, "IER": math.nan, "DER": math.nan, "SER": math.nan}
        ins, dels, subs = int(self.insertions), int(self.deletions), int(self.substitutions)
        return {
            "CER": 100.0 * (ins + dels + subs) / total,
            "IER": 100.0 * ins / total,
            "DER": 100.0 * dels / total,
            "SER": 100.0 * subs / total,
        }
