"""The trainer's optimizer: Adam's multi-tensor (foreach) update by default, the same floats
as torch's per-tensor loop; an explicit ``foreach`` or ``fused`` in the config wins."""

from __future__ import annotations

import copy

import torch

from emg2qwerty_ssm.lightning_module import EMGModule
from emg2qwerty_ssm.models.summary import compose_model_config


def _module(**optimizer: object) -> EMGModule:
    torch.manual_seed(0)
    cfg = compose_model_config(["model=tc_s4_small"])
    return EMGModule(cfg, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3, **optimizer})


def test_foreach_by_default_and_the_config_wins() -> None:
    assert _module().configure_optimizers().defaults["foreach"] is True
    assert _module(foreach=False).configure_optimizers().defaults["foreach"] is False
    fused = _module(fused=True).configure_optimizers().defaults
    assert fused["fused"] is True and not fused["foreach"]


def test_foreach_update_equals_the_per_tensor_loop() -> None:
    fast = _module()
    slow = copy.deepcopy(fast)
    opt_fast = fast.configure_optimizers()
    opt_slow = torch.optim.Adam(slow.model.param_groups(1e-3), lr=1e-3)  # torch's CPU default
    for step in range(3):
        torch.manual_seed(step)
        for a, b in zip(fast.parameters(), slow.parameters(), strict=True):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        opt_fast.step()
        opt_slow.step()
    for a, b in zip(fast.parameters(), slow.parameters(), strict=True):
        assert torch.equal(a, b)
