"""Paper models for the streaming and fast-path equality tests."""

from __future__ import annotations

import math

import torch

from emg2qwerty_ssm.models import EMGModel, build_model
from emg2qwerty_ssm.models.s4d import S4D
from emg2qwerty_ssm.models.summary import compose_model_config


def paper_model(name: str, *, affine: bool = False, timescales: bool = False) -> EMGModel:
    """``model=name`` built with seed 0, in eval mode, with non-trivial BatchNorm statistics
    (so eval-mode normalisation is exercised); ``affine`` also randomises BatchNorm's scale
    and shift, ``timescales`` every S4D layer's ``log_dt`` over [0.01, 1]."""
    torch.manual_seed(0)
    m = build_model(compose_model_config([f"model={name}"])).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                if affine:
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0, 0.1)
            if timescales and isinstance(mod, S4D):
                mod.log_dt.uniform_(math.log(0.01), math.log(1.0))
    return m
