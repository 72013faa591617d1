"""emg2qwerty's own TDSConvCTCModule checkpoints load into our tds_conv_ctc."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from emg2qwerty_ssm import load_model
from emg2qwerty_ssm.models.checkpoints import SAFE_GLOBALS, CheckpointError

CKPT = "tds_conv_ctc_emg2qwerty.ckpt"


@pytest.fixture(scope="module")
def baseline_ckpt(baseline_checkpoint_dir: Path) -> dict:
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        return torch.load(baseline_checkpoint_dir / CKPT, weights_only=True)


def test_baseline_checkpoint_reproduces_emissions(baseline_checkpoint_dir: Path) -> None:
    io = torch.load(baseline_checkpoint_dir / "tds_conv_ctc_emg2qwerty_io.pt", weights_only=True)
    model = load_model(baseline_checkpoint_dir / CKPT)
    assert not model.training
    assert model.input_kind == "log_spectrogram"
    assert sum(p.numel() for p in model.parameters()) == 5_293_315  # the baseline's count
    with torch.no_grad():
        emissions = model(io["inputs"])
    assert emissions.shape == io["emissions"].shape == (276, 2, 99)
    assert (emissions - io["emissions"]).abs().max().item() <= 1e-4


def test_interpolations_are_never_resolved(baseline_ckpt: dict, tmp_path: Path) -> None:
    # emg2qwerty's lr_scheduler refers to its own Hydra config; resolving it would fail
    ckpt = dict(baseline_ckpt)
    hp = dict(ckpt["hyper_parameters"])
    hp["lr_scheduler"] = OmegaConf.create({"max_epochs": "${trainer.max_epochs}"})
    ckpt["hyper_parameters"] = hp
    torch.save(ckpt, tmp_path / "interp.ckpt")
    load_model(tmp_path / "interp.ckpt")  # no InterpolationResolutionError


def test_interpolated_architecture_value_is_refused(baseline_ckpt: dict, tmp_path: Path) -> None:
    ckpt = dict(baseline_ckpt)
    ckpt["hyper_parameters"] = {
        **ckpt["hyper_parameters"],
        "mlp_features": OmegaConf.create(["${model.width}"]),
    }
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="mlp_features"):
        load_model(tmp_path / "bad.ckpt")


def test_unknown_key_is_refused(baseline_ckpt: dict, tmp_path: Path) -> None:
    ckpt = dict(baseline_ckpt)
    ckpt["state_dict"] = {**ckpt["state_dict"], "model.9.weight": torch.zeros(1)}
    torch.save(ckpt, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match=r"model\.9\.weight"):
        load_model(tmp_path / "extra.ckpt")


def test_arbitrary_pickle_is_refused(baseline_ckpt: dict, tmp_path: Path) -> None:
    ckpt = dict(baseline_ckpt)
    ckpt["callbacks"] = {"x": Path("/")}  # any class outside the allow-list
    torch.save(ckpt, tmp_path / "unsafe.ckpt")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_model(tmp_path / "unsafe.ckpt")
