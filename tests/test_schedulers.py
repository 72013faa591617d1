"""The warm-up + cosine-with-warm-restarts schedule against the measured table
(docs/recipe.md#lr-schedule)."""

from __future__ import annotations

import pytest
import torch

from emg2qwerty_ssm.schedulers import cosine_warm_restarts, warmup_cosine_lr

# docs/recipe.md#lr-schedule, measured on the seed: epoch -> (general group lr, SSM group lr)
MEASURED = {
    0: (1e-6, 1e-6),
    1: (2.509e-4, 5.09e-5),
    5: (1.2505e-3, 2.505e-4),
    9: (2.2501e-3, 4.501e-4),
    10: (2.49696e-3, 4.99392e-4),
    100: (2.20767e-3, 4.41628e-4),
    225: (1.2505e-3, 2.505e-4),
    449: (1.0304e-6, 1.0061e-6),
    450: (1e-6, 1e-6),
    451: (1.259e-4, 2.59e-5),
}


def _optimizer() -> torch.optim.Optimizer:
    general = torch.nn.Parameter(torch.zeros(3))
    ssm = torch.nn.Parameter(torch.zeros(2))
    return torch.optim.Adam(
        [{"params": [general]}, {"params": [ssm], "lr": 5e-4, "weight_decay": 0.0}], lr=2.5e-3
    )


def test_lambda_lr_reproduces_the_measured_table() -> None:
    opt = _optimizer()
    sched = cosine_warm_restarts(opt, T_0=450, warmup_epochs=10, lr_decay=[1, 0.5], eta_min=1e-6)
    seen = {}
    for epoch in range(452):
        seen[epoch] = [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
    for epoch, (general, ssm) in MEASURED.items():
        assert seen[epoch][0] == pytest.approx(general, rel=2e-4), epoch
        assert seen[epoch][1] == pytest.approx(ssm, rel=2e-4), epoch


def test_decay_list_runs_out_and_keeps_its_last_entry() -> None:
    args = dict(T_0=10, warmup_epochs=2, lr_decay=[1.0, 0.5], eta_min=0.0)
    assert warmup_cosine_lr(21, 1.0, **args) == pytest.approx(0.5 * 0.5)  # cycle 2: decay 0.5
    assert warmup_cosine_lr(11, 1.0, **args) == pytest.approx(0.5 * 0.5)  # warm-up, half-way


def test_scheduler_state_round_trips_through_a_weights_only_checkpoint(tmp_path) -> None:
    opt = _optimizer()
    sched = cosine_warm_restarts(opt, T_0=20, warmup_epochs=3)
    for _ in range(7):
        opt.step()
        sched.step()
    torch.save({"sched": sched.state_dict()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)["sched"]

    opt2 = _optimizer()
    sched2 = cosine_warm_restarts(opt2, T_0=20, warmup_epochs=3)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    expected = [g["lr"] for g in opt.param_groups]
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [dict(T_0=0), dict(T_0=5, warmup_epochs=6), dict(eta_min=-1.0)],
)
def test_bad_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="lr_scheduler"):
        cosine_warm_restarts(_optimizer(), **kwargs)
