"""The exported step (one output frame, real fixed-shape state) equals the offline model."""

from __future__ import annotations

import copy

import pytest
import torch

from emg2qwerty_ssm.export import ExportableStep, UnsupportedBlockError, stream_step
from emg2qwerty_ssm.models import EMGModel, build_model
from emg2qwerty_ssm.models.summary import compose_model_config

ATOL = 1e-5

SMALL = {
    "tc": [
        "model=tc_s4_small",
        "model.encoder.mlp_features=[8]",
        "model.frontend.out_channels=[8,12,10]",
        "model.backbone.d_model=16",
        "model.backbone.n_layers=2",
        "model.backbone.d_state=8",
    ],
    "identity_pools": [  # S4_large's shape: identity front-end, end pools inside the backbone
        "model=s4_large",
        "model.encoder.mlp_features=[8]",
        "model.encoder.offsets=[-1,0,1]",
        "model.backbone.d_model=16",
        "model.backbone.n_layers=4",
        "model.backbone.d_state=8",
        "model.backbone.d_output=12",
        "model.backbone.end_pools=[2,1,2,1]",
    ],
    "gru": [
        "model=gru_s4_small",
        "model.encoder.mlp_features=[8]",
        "model.frontend.d_hidden=12",
        "model.frontend.out_features=10",
        "model.frontend.mean_pooling=2",
        "model.backbone.d_model=16",
        "model.backbone.n_layers=2",
        "model.backbone.d_state=8",
    ],
    "egru": [
        "model=egru_s4_small",
        "model.encoder.mlp_features=[8]",
        "model.encoder.norm=batchnorm",
        "model.frontend.d_hidden=12",
        "model.frontend.out_features=10",
        "model.frontend.reduction=last",
        "model.frontend.norm=layernorm",
        "model.backbone.d_model=16",
        "model.backbone.n_layers=2",
        "model.backbone.d_state=8",
    ],
}


def _model(overrides: list[str], seed: int = 0) -> EMGModel:
    torch.manual_seed(seed)
    model = build_model(compose_model_config(overrides)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is exercised
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_streamed_step_equals_offline_small_models(kind: str) -> None:
    model = _model(SMALL[kind])
    step = ExportableStep(model)
    assert step.stride == model.stride
    assert step.input_shape == (model.stride, 2, 16)
    x = torch.randn(30 * model.stride + model.stride // 2, 2, 16)  # a partial last frame
    with torch.no_grad():
        offline = model(x.unsqueeze(1)).squeeze(1)
    streamed = stream_step(step, x)
    assert streamed.shape == offline.shape == (30, 99)
    assert (streamed - offline).abs().max().item() <= ATOL


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_float64_step_equals_the_float64_offline_model(kind: str) -> None:
    """Without float32 rounding the step is the offline model to ~1e-13: the step's maths is
    exact, so the ~1e-6 (random weights) to ~3e-5 (a trained model) of the float32 step are
    rounding, not a formulation error (docs/export.md, "Parity")."""
    model = _model(SMALL[kind])
    step = ExportableStep(model, torch.float64)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is not touched
    assert all(s.dtype == torch.float64 for s in step.initial_state())
    x = torch.randn(30 * model.stride, 2, 16)  # float32 EMG, as the data
    with torch.no_grad():
        offline = copy.deepcopy(model).double()(x.double().unsqueeze(1)).squeeze(1)
    streamed = stream_step(step, x)
    assert streamed.dtype == torch.float64
    assert (streamed - offline).abs().max().item() <= 1e-10


def test_stride_follows_the_model() -> None:
    assert ExportableStep(_model(SMALL["identity_pools"])).stride == 4 * 2 * 2
    assert ExportableStep(_model(SMALL["tc"])).stride == 96


def test_tc_s4_small_streamed_step_equals_offline() -> None:
    model = _model(["model=tc_s4_small"])
    step = ExportableStep(model)
    assert step.input_shape == (96, 2, 16)
    x = torch.randn(96 * 40, 2, 16)
    with torch.no_grad():
        offline = model(x.unsqueeze(1)).squeeze(1)
    assert (stream_step(step, x) - offline).abs().max().item() <= ATOL


def test_state_is_named_real_fixed_shape_and_not_mutated() -> None:
    model = _model(SMALL["egru"])
    step = ExportableStep(model)
    names = step.state_names
    assert len(set(names)) == len(names)
    assert names[:2] == ["frontend.egru.c", "frontend.egru.y"]
    assert names[2:] == [
        "backbone.0.ssm_re",
        "backbone.0.ssm_im",
        "backbone.1.ssm_re",
        "backbone.1.ssm_im",
    ]
    state = step.initial_state()
    assert [tuple(s.shape) for s in state] == [spec.shape for spec in step.state_specs]
    assert all(s.dtype == torch.float32 and not s.any() for s in state)
    window = torch.randn(step.input_shape)
    with torch.no_grad():
        out1 = step(window, *state)
        state_copy = [s.clone() for s in out1[1:]]
        out2 = step(window, *out1[1:])
        again = step(window, *state_copy)
    assert out1[0].shape == (99,)
    assert torch.allclose(out1[0].exp().sum(), torch.tensor(1.0), atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(out1[1:], state_copy, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(out2, again, strict=True))  # pure
    assert any(not torch.equal(a, b) for a, b in zip(out1[1:], out2[1:], strict=True))


def test_state_matches_the_models_complex_ssm_state() -> None:
    """The real pairs are the model's own complex S4D state (the C library relies on it)."""
    model = _model(SMALL["tc"])
    model.stream_engine = "torch"  # stage-by-stage states, the S4D one complex (N, H, modes)
    step = ExportableStep(model)
    x = torch.randn(5 * model.stride, 2, 16)
    with torch.no_grad():
        _, model_state = model.forward_stream(x.unsqueeze(1), model.initial_state(1))
        state = step.initial_state()
        for k in range(5):
            state = step(x[k * 96 : (k + 1) * 96], *state)[1:]
    for i, (ssm, _) in enumerate(model_state[2]):
        assert torch.allclose(state[2 * i], ssm[0].real, atol=1e-5)
        assert torch.allclose(state[2 * i + 1], ssm[0].imag, atol=1e-5)


def test_unsupported_block_is_named_with_the_supported_ones() -> None:
    model = build_model(
        compose_model_config(["model=tds_conv_ctc", "model.encoder.mlp_features=[24]"])
    )
    with pytest.raises(UnsupportedBlockError, match="log_spectrogram") as info:
        ExportableStep(model)
    assert "S4DBackbone" in str(info.value) and "TemporalConvFrontend" in str(info.value)
    model.input_kind = "raw"  # past the input check, the block itself is refused
    with pytest.raises(UnsupportedBlockError, match="SpectrogramMLPEncoder"):
        ExportableStep(model)


def test_seed_checkpoint_step_equals_offline(reference_dir) -> None:
    from emg2qwerty_ssm import load_model

    path = reference_dir / "seed_checkpoint" / "TC_S4_small.ckpt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    model = load_model(path)
    x = torch.randn(96 * 20, 2, 16)
    with torch.no_grad():
        offline = model(x.unsqueeze(1)).squeeze(1)
    assert (stream_step(ExportableStep(model), x) - offline).abs().max().item() <= ATOL
