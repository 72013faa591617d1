"""Character error rates, micro-averaged over an epoch: CER and its three parts.

The parts are named after what the *model* got wrong, in percent of target characters:

- ``missing``: target characters the model did not emit (emg2qwerty's ``IER``),
- ``extra``: characters the model emitted that are not in the target (emg2qwerty's ``DER``),
- ``substituted``: characters emitted in place of another one (emg2qwerty's ``SER``).

emg2qwerty counts the edits that turn the *prediction* into the *target*, so its "insertion
error rate" counts insertions into the prediction, i.e. characters the model missed; its names
are kept as aliases (same values) for compatibility. See docs/decoding.md and
docs/decoding-rules.md#cer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from rapidfuzz.distance import Levenshtein
from torchmetrics import Metric

if TYPE_CHECKING:
    from emg2qwerty_ssm.data import LabelData

__all__ = ["CharacterErrorRates", "ALIASES", "RATE_NAMES"]

#: emg2qwerty's name -> the name saying what it counts (both are in ``compute()``)
ALIASES = {"IER": "missing", "DER": "extra", "SER": "substituted"}
#: the rates in display order: total, then the parts by what the model got wrong
RATE_NAMES = ("CER", "missing", "extra", "substituted")


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
    one rate per operation type likewise: a micro-average over the epoch, not a mean of
    per-item rates. An insertion (into the prediction) is a character the model *missed*
    (``missing`` = ``IER``), a deletion one it emitted *extra* (``extra`` = ``DER``), a
    replacement one it got wrong (``substituted`` = ``SER``). Texts are compared raw (⌫ and ⇧
    are characters). Operations come from rapidfuzz's ``Levenshtein.editops(prediction,
    target)``, whose tie-breaking
    between equal-cost alignments decides the per-type split (the total does not depend
    on it).

    An epoch whose targets are all empty has no defined rate: ``compute`` then returns NaN
    for every rate (and counts nothing as an error), rather than dividing by zero.
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
        counts = edit_counts(pred_text, target_text)
        self.insertions += counts["missing"]
        self.deletions += counts["extra"]
        self.substitutions += counts["substituted"]
        self.target_length += len(target_text)

    def compute(self) -> dict[str, float]:
        total = int(self.target_length)
        ins, dels, subs = int(self.insertions), int(self.deletions), int(self.substitutions)
        return error_rates(ins, dels, subs, total)


def error_rates(insertions: int, deletions: int, substitutions: int, target_length: int) -> dict:
    """``{CER, missing, extra, substituted, IER, DER, SER}`` in percent (NaN without targets).

    The counts are edits from prediction to target: ``insertions`` = characters missed.
    """
    if target_length == 0:
        return {k: math.nan for k in (*RATE_NAMES, *ALIASES)}
    rates = {
        "CER": 100.0 * (insertions + deletions + substitutions) / target_length,
        "missing": 100.0 * insertions / target_length,
        "extra": 100.0 * deletions / target_length,
        "substituted": 100.0 * substitutions / target_length,
    }
    return {**rates, **{alias: rates[name] for alias, name in ALIASES.items()}}


def edit_counts(prediction: str, target: str) -> dict[str, int]:
    """``{missing, extra, substituted}`` character counts of one prediction against its target."""
    counts = {"insert": 0, "delete": 0, "replace": 0}
    for op in Levenshtein.editops(prediction, target):
        counts[op.tag] += 1
    return {
        "missing": counts["insert"],
        "extra": counts["delete"],
        "substituted": counts["replace"],
    }
