"""``python -m emg2qwerty_ssm.models.summary model=<name> [overrides]``: the per-layer model
card. Kept as an entry point and import location; the implementation is
:mod:`emg2qwerty_ssm.models.card` (``python -m emg2qwerty_ssm.cost ... blocks=true``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from emg2qwerty_ssm.models.card import compose_model_config, layer_table
from emg2qwerty_ssm.models.card import main as _card_main

__all__ = ["compose_model_config", "layer_table", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The model card with one row per layer (``blocks=true``); no arguments: usage, exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(__doc__)
        return 2
    return _card_main(args, blocks=True)


if __name__ == "__main__":
    sys.exit(main())
