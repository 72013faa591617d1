"""Shared helpers of the speed benchmarks (bench_streaming / bench_offline / bench_train_step).

Every benchmark times today's implementation (``s4d_reference.reference_mode()``: the S4D maths
as it was before issue 11, recomputed per call, the plain conv front-end and the encoder's
roll/stack) and the fast
paths on the same weights, interleaved in one process, and prints the machine's core count
and load beside the numbers: on a shared machine only the ratios are meaningful.
"""

from __future__ import annotations

import os
import statistics

import torch

from emg2qwerty_ssm.models import EMGModel, build_model
from emg2qwerty_ssm.models.summary import compose_model_config

PAPER_MODELS = ("tc_s4_small", "tc_s4_medium", "s4_large")


def machine_line() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"cpu_count={os.cpu_count()} loadavg=({load}) torch_threads={torch.get_num_threads()} "
        f"torch={torch.__version__}"
    )


def paper_model(name: str, seed: int = 0) -> EMGModel:
    """A randomly initialised model of config ``model=<name>`` in eval mode."""
    torch.manual_seed(seed)
    return build_model(compose_model_config([f"model={name}"])).eval()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def median(values: list[float]) -> float:
    return statistics.median(values)
