"""C export (host): fp32 parity with PyTorch, int8 bit-exactness with the NumPy reference."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emg2qwerty_ssm.export.c_target import export_c, greedy_text
from emg2qwerty_ssm.export.cgen.emit_int8 import emit_int8
from emg2qwerty_ssm.export.cgen.host import build_host, frames_to_steps, run_host
from emg2qwerty_ssm.export.cgen.int8_reference import Int8Reference
from emg2qwerty_ssm.export.cgen.plan import UnsupportedModelError, build_plan
from emg2qwerty_ssm.export.cgen.quant import quantize_plan
from emg2qwerty_ssm.models.model import EMGModel, build_model

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc on PATH")

ENCODER = {
    "_target_": "emg2qwerty_ssm.models.encoder.RotationInvariantEncoder",
    "mlp_features": [8],
    "input_mean_pooling": 4,
}
TC = {
    "_target_": "emg2qwerty_ssm.models.frontends.TemporalConvFrontend",
    "out_channels": [8, 12, 10],
    "strides": [4, 3, 2],
}
IDENTITY = {"_target_": "emg2qwerty_ssm.models.frontends.IdentityFrontend"}


def _backbone(pools: list[int] | None) -> dict:
    return {
        "_target_": "emg2qwerty_ssm.models.backbones.S4DBackbone",
        "d_model": 16,
        "n_layers": 2,
        "d_state": 8,
        "d_output": 12,
        "end_pools": pools,
    }


def tiny_model(kind: str = "tc", seed: int = 0) -> EMGModel:
    """A small random model: TC front-end (stride 96), identity + pools (stride 8), or
    identity with a two-layer encoder MLP without norm (stride 4)."""
    torch.manual_seed(seed)
    frontend, pools, encoder = (TC, None, ENCODER) if kind == "tc" else (IDENTITY, [2, 1], ENCODER)
    if kind == "mlp2":
        pools, encoder = None, {**ENCODER, "mlp_features": [8, 6], "norm": "none"}
    cfg = {"name": f"tiny_{kind}", "encoder": encoder, "frontend": frontend}
    model = build_model({**cfg, "backbone": _backbone(pools)})
    for module in model.modules():  # non-trivial BatchNorm statistics to test the folding
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def emg(samples: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(samples, 2, 16, generator=torch.Generator().manual_seed(seed)) * 2.0


@pytest.mark.parametrize("kind", ["tc", "pools", "mlp2"])
def test_fp32_host_c_matches_pytorch(tmp_path: Path, kind: str) -> None:
    model = tiny_model(kind)
    report = export_c(
        model,
        tmp_path,
        target="c",
        precision="fp32",
        calibration=None,
        session_emg=emg(model.stride * 40),
    )
    assert report["steps"] == 40
    assert report["max_abs_diff"] <= 1e-4
    assert report["greedy_text_equal"]
    assert report["checks"] == {"fp32_within_1e-4_of_pytorch": True}
    header = Path(report["artefacts"]["header"]).read_text()
    assert f"#define EMG_MODEL_STRIDE {model.stride}" in header
    source = Path(report["artefacts"]["source"]).read_text()
    assert "malloc" not in source and "static const float" in source


def test_tc_s4_small_fp32_parity(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose(config_name="config", overrides=["model=tc_s4_small"])
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    session = emg(96 * 25)
    report = export_c(
        model, tmp_path, target="c", precision="fp32", calibration=None, session_emg=session
    )
    assert report["params"] == 388_437
    assert report["max_abs_diff"] <= 1e-4
    assert report["greedy_text_equal"]


@pytest.mark.parametrize("quantize_input_layer", [False, True])
@pytest.mark.parametrize("kind", ["tc", "pools", "mlp2"])
def test_int8_host_c_bit_exact_vs_numpy_reference(
    tmp_path: Path, kind: str, quantize_input_layer: bool
) -> None:
    model = tiny_model(kind, seed=3)
    calibration = emg(model.stride * 60, seed=7)
    session = emg(model.stride * 40, seed=8).numpy()
    # then heavy-tailed input as in real EMG (extremes int8 would clip) for the bit-exactness
    clean = 30
    session[model.stride * clean :: 37] *= 40.0
    qplan = quantize_plan(build_plan(model), calibration.numpy(), quantize_input_layer)
    lib = emit_int8(qplan, tmp_path)
    source = lib.source.read_text()
    # the input layer's weights: float32 by default, int8 when asked (as in the ONNX export)
    w_type = "int8_t" if quantize_input_layer else "float"
    assert (
        f"static const {w_type} enc0_0_w[" in source
        and f"static const {w_type} enc1_0_w[" in source
    )
    assert ("flinear(S.pooled" in source) != quantize_input_layer
    if kind == "mlp2":  # the encoder's second product is int8 either way
        assert "static const int8_t enc0_1_w[" in source
    steps = frames_to_steps(session, model.stride)
    host = run_host(build_host(lib, tmp_path), steps, tmp_path, 99)
    reference = Int8Reference(qplan).run(steps)
    assert host.log_probs.dtype == reference.dtype == np.float32
    np.testing.assert_array_equal(host.log_probs, reference)
    # int8 stays close to the float model on the clean part (a loose bound: random weights,
    # tiny widths; the model is causal, so the later steps do not change these)
    with torch.no_grad():
        ref = model(torch.from_numpy(session[: clean * model.stride]).unsqueeze(1))[:, 0]
    assert np.abs(host.log_probs[:clean] - ref.numpy()).max() < 0.5


def test_int8_report_checks(tmp_path: Path) -> None:
    model = tiny_model("tc", seed=5)
    report = export_c(
        model,
        tmp_path,
        target="c",
        precision="int8",
        calibration=emg(96 * 50, seed=2),
        session_emg=emg(96 * 20, seed=3),
    )
    assert report["checks"] == {"int8_bit_exact_vs_numpy_reference": True}
    assert report["int8_reference_max_abs_diff"] == 0.0
    assert report["calibration"] == "calibration"
    assert report["input_layer"] == "float32"  # the default, as in the ONNX int8 export
    assert "int8_t" in Path(report["artefacts"]["source"]).read_text()


def test_unsupported_block_names_block_and_supported_list(tmp_path: Path) -> None:
    model = build_model(
        {
            "encoder": ENCODER,
            "frontend": {
                "_target_": "emg2qwerty_ssm.models.recurrent.GRUFrontend",
                "d_hidden": 8,
                "out_features": 10,
                "block_length": 24,
            },
            "backbone": _backbone(None),
        }
    )
    with pytest.raises(UnsupportedModelError, match=r"model\.frontend = GRUFrontend.*supported"):
        export_c(
            model, tmp_path, target="c", precision="fp32", calibration=None, session_emg=emg(96)
        )


def test_bad_session_shape_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"session_emg must be raw EMG \(T, 2, 16\)"):
        export_c(
            tiny_model(),
            tmp_path,
            target="c",
            precision="fp32",
            calibration=None,
            session_emg=torch.zeros(960, 32),
        )
    with pytest.raises(ValueError, match="target must be one of"):
        export_c(
            tiny_model(),
            tmp_path,
            target="gpu",
            precision="fp32",
            calibration=None,
            session_emg=emg(96),
        )


def test_greedy_text_collapses_repeats_and_blanks() -> None:
    lp = np.full((5, 99), -10.0, dtype=np.float32)
    for t, label in enumerate([0, 0, 98, 0, 1]):
        lp[t, label] = 0.0
    from emg2qwerty_ssm.charset import charset

    cs = charset()
    assert greedy_text(lp) == cs.labels_to_str([0, 0, 1])


def test_seed_checkpoint_c_reproduces_the_authors_emissions(
    reference_dir: Path, tmp_path: Path
) -> None:
    """The authors' TC_S4_small checkpoint format, streamed through the fp32 C library,
    reproduces the emissions their code produced (one of the two batch items)."""
    import emg2qwerty_ssm

    seed_dir = reference_dir / "seed_checkpoint"
    model = emg2qwerty_ssm.load_model(seed_dir / "TC_S4_small.ckpt")
    io = torch.load(seed_dir / "TC_S4_small_io.pt", weights_only=True)
    report = export_c(
        model,
        tmp_path,
        target="c",
        precision="fp32",
        calibration=None,
        session_emg=io["inputs"][:, 0],
    )
    host = np.fromfile(report["artefacts"]["host_log_probs"], dtype=np.float32).reshape(-1, 99)
    assert host.shape == (50, 99)
    assert np.abs(host - io["emissions"][:, 0].numpy()).max() <= 1e-4
    assert report["greedy_text_equal"]


def test_missing_cross_toolchain_names_make_target(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from emg2qwerty_ssm.export.c_target import ToolchainError

    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no arm-none-eabi-gcc, no QEMU
    with pytest.raises(ToolchainError, match=r"arm-none-eabi-gcc not found.*make mcu-toolchain"):
        export_c(
            tiny_model(),
            tmp_path,
            target="cortex-m4",
            precision="int8",
            calibration=None,
            session_emg=emg(96),
        )
