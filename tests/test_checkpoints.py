"""Checkpoints: the seed fixture reproduces its emissions; own format; safe loading; refusals."""

from __future__ import annotations

import copy
import fractions
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from emg2qwerty_ssm.models import build_model, load_model, save_model
from emg2qwerty_ssm.models.checkpoints import FORMAT, CheckpointError, _torch_load
from emg2qwerty_ssm.models.summary import compose_model_config


@pytest.fixture(scope="module")
def seed_dir(reference_dir: Path) -> Path:
    return reference_dir / "seed_checkpoint"


@pytest.fixture(scope="module")
def seed_ckpt(seed_dir: Path) -> dict:
    return _torch_load(seed_dir / "TC_S4_small.ckpt", "cpu", trust_pickle=False)


@pytest.fixture(scope="module")
def io(seed_dir: Path) -> dict:
    return torch.load(seed_dir / "TC_S4_small_io.pt", weights_only=True)


def _save(ckpt: dict, path: Path) -> Path:
    torch.save(ckpt, path)
    return path


def test_seed_checkpoint_reproduces_emissions(seed_dir: Path, io: dict) -> None:
    import emg2qwerty_ssm

    model = emg2qwerty_ssm.load_model(seed_dir / "TC_S4_small.ckpt")
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == 388_437
    assert model.stride == 96
    assert model.config["frontend"]["out_channels"] == [96, 192, 150]
    with torch.no_grad():
        out = model(io["inputs"])
    assert out.shape == io["emissions"].shape == (50, 2, 99)
    assert (out - io["emissions"]).abs().max().item() <= 1e-4


def test_convert_script_writes_safe_own_format(seed_dir: Path, io: dict, tmp_path: Path) -> None:
    import runpy

    script = Path(__file__).resolve().parent.parent / "scripts" / "convert_seed_checkpoint.py"
    convert = runpy.run_path(str(script))["main"]
    out = tmp_path / "converted.ckpt"
    assert convert([str(seed_dir / "TC_S4_small.ckpt"), str(out)]) == 0
    raw = torch.load(out, weights_only=True)  # no allow-list needed
    assert raw["format"] == FORMAT
    assert raw["metadata"]["seed"]["epoch"] == 123
    assert raw["model_config"]["backbone"]["d_model"] == 96
    with torch.no_grad():
        emissions = load_model(out)(io["inputs"])
    assert (emissions - io["emissions"]).abs().max().item() <= 1e-4
    assert convert([str(tmp_path / "missing.ckpt"), str(out)]) == 1


def test_own_format_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_model(compose_model_config(["model=tc_s4_small"]))
    with torch.no_grad():  # non-default BatchNorm statistics must survive the round trip
        model.frontend.layers[1].running_mean.normal_()
    model.eval()
    path = save_model(model, tmp_path / "m.ckpt", metadata={"note": "test"})
    loaded = load_model(path)
    x = torch.randn(960, 2, 2, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.name == "tc_s4_small"
    assert torch.load(path, weights_only=True)["metadata"]["note"] == "test"


def test_own_lightning_checkpoint_loads(tmp_path: Path) -> None:
    """A checkpoint of the project's LightningModule: hyper_parameters.model_cfg, model.* keys."""
    torch.manual_seed(2)
    model = build_model(compose_model_config(["model=tc_s4_small"])).eval()
    cfg = OmegaConf.create(model.config)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["metrics.val_cer.errors"] = torch.zeros(())  # other LightningModule members: ignored
    ckpt = {"state_dict": state, "hyper_parameters": {"model_cfg": cfg, "optimizer": None}}
    path = _save(ckpt, tmp_path / "l.ckpt")
    x = torch.randn(500, 1, 2, 16)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), model(x))


def test_unsafe_pickle_is_refused_unless_trusted(seed_ckpt: dict, io: dict, tmp_path: Path) -> None:
    ckpt = dict(seed_ckpt, callbacks={"odd": fractions.Fraction(1, 3)})
    path = _save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match=r"(?s)fractions\.Fraction.*trust_pickle=True"):
        load_model(path)
    model = load_model(path, trust_pickle=True)
    with torch.no_grad():
        assert (model(io["inputs"]) - io["emissions"]).abs().max().item() <= 1e-4


def test_unknown_state_dict_key_is_refused(seed_ckpt: dict, tmp_path: Path) -> None:
    state = dict(seed_ckpt["state_dict"])
    state["model.7.weight"] = torch.zeros(3)
    path = _save(dict(seed_ckpt, state_dict=state), tmp_path / "k.ckpt")
    with pytest.raises(CheckpointError, match=r"model\.7\.weight"):
        load_model(path)


def test_shape_mismatch_is_refused(seed_ckpt: dict, tmp_path: Path) -> None:
    hp = copy.deepcopy(seed_ckpt["hyper_parameters"])
    hp["mlp_features"] = [40]  # the weights are for 36 features
    path = _save(dict(seed_ckpt, hyper_parameters=hp), tmp_path / "s.ckpt")
    with pytest.raises(CheckpointError, match=r"shape mismatch.*encoder\.mlps\.0"):
        load_model(path)


def test_unsupported_front_end_is_refused(seed_ckpt: dict, tmp_path: Path) -> None:
    hp = copy.deepcopy(seed_ckpt["hyper_parameters"])
    hp["model_HF"] = OmegaConf.create({"_target_": "emg2qwerty.modules.HF_GRU", "d_hidden": 64})
    path = _save(dict(seed_ckpt, hyper_parameters=hp), tmp_path / "g.ckpt")
    with pytest.raises(CheckpointError, match=r"front-end.*HF_GRU"):
        load_model(path)


def test_inconsistent_alias_is_refused(seed_ckpt: dict, tmp_path: Path) -> None:
    state = dict(seed_ckpt["state_dict"])
    state["model_LF.decoder.bias"] = state["model_LF.decoder.bias"] + 1.0
    path = _save(dict(seed_ckpt, state_dict=state), tmp_path / "a.ckpt")
    with pytest.raises(CheckpointError, match=r"model_LF\.decoder\.bias"):
        load_model(path)


def test_seed_s4_large_hyper_parameters_give_the_paper_model(seed_ckpt: dict) -> None:
    from emg2qwerty_ssm.models.checkpoints import seed_model_config

    hp = OmegaConf.to_container(OmegaConf.create(seed_ckpt["hyper_parameters"]))
    hp.update(mlp_features=[60], model_HF={"_target_": "torch.nn.Identity"})
    hp["model_LF"].update(
        d_model=256,
        d_output=150,
        end_layer_pools=[2, 2, 2, 2, 1, 1, 1, 1],
        end_layer_pool_mode="mean",
    )
    model = build_model(seed_model_config(hp))
    assert sum(p.numel() for p in model.parameters()) == 1_278_691
    assert model.stride == 64
    hp["model_LF"]["end_layer_pool_mode"] = "max"
    with pytest.raises(CheckpointError, match="end_layer_pool_mode"):
        seed_model_config(hp)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = _save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="not a recognised checkpoint"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.ckpt")
