"""The EGRU recurrence step by step under autograd: the specification :class:`EGRUScan`'s
hand-written backward is tested against (test-only; benchmarks/bench_recurrent_frontends.py
times it too)."""

from __future__ import annotations

import torch

from emg2qwerty_ssm.models.egru_scan import SpikeFunction, gru_cell


def egru_scan_reference(
    gx_all: torch.Tensor,
    c: torch.Tensor,
    y: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_hh: torch.Tensor,
    theta: torch.Tensor,
    keep: torch.Tensor | float,
    gamma: float,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The EGRU recurrence step by step under autograd: the specification of :class:`EGRUScan`.

    ``gx_all`` ``(T, N, 3H)`` input projections, ``c``/``y`` ``(N, H)`` the state and sparse
    output before the first step, ``keep`` the zoneout weight of the new state (a ``(T, N, H)``
    0/1 mask in training, ``1 - p`` in eval). Returns the outputs ``(T, N, H)`` and the last
    state ``c``. Used by the tests to check :class:`EGRUScan`'s hand-written backward.
    """
    outputs = []
    for t, gx in enumerate(gx_all.unbind(0)):
        c_new = gru_cell(gx, y, c, weight_hh, bias_hh)
        c_new = c + (c_new - c) * (keep[t] if isinstance(keep, torch.Tensor) else keep)
        event = SpikeFunction.apply(c_new - theta, gamma, epsilon)
        y = event * c_new
        c = c_new - event * theta
        outputs.append(y)
    return torch.stack(outputs), c
