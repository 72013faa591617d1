"""Final evaluation of a whole split: :func:`evaluate_loader` (kept import location).

The implementation is :mod:`emg2qwerty_ssm.scoring`, the one emissions -> decode -> score path
shared with the Lightning module.
"""

from __future__ import annotations

from emg2qwerty_ssm.scoring import evaluate_loader

__all__ = ["evaluate_loader"]
