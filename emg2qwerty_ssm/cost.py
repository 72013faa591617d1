"""``python -m emg2qwerty_ssm.cost model=<name> [format=json] [blocks=true] [overrides]``.

The cost accounting lives beside the models: the leaf (:class:`BlockCost`, :func:`model_card`,
the per-layer helpers) in :mod:`emg2qwerty_ssm.models.cost`, the model-card command and Hydra
composition in :mod:`emg2qwerty_ssm.models.card`. This module keeps the command and the
historical import names (``emg2qwerty_ssm.cost.config_macs_per_second`` is the Optuna budget
function named in configs).
"""

from __future__ import annotations

from emg2qwerty_ssm.models.card import (
    compose_config,
    config_card,
    config_macs_per_second,
    format_card,
    main,
)
from emg2qwerty_ssm.models.cost import (
    WEIGHT_OPS,
    BlockCost,
    card_metrics,
    flop_counter_weight_macs,
    model_card,
    stage_of,
    summarize,
)

__all__ = [
    "WEIGHT_OPS",
    "BlockCost",
    "card_metrics",
    "compose_config",
    "config_card",
    "config_macs_per_second",
    "flop_counter_weight_macs",
    "format_card",
    "main",
    "model_card",
    "stage_of",
    "summarize",
]

if __name__ == "__main__":
    raise SystemExit(main())
