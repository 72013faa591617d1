"""The paper's three models: composition, parameter counts, cost, rates, optimizer groups."""

from __future__ import annotations

import copy

import pytest
import torch

from emg2qwerty_ssm.models import EMGModel, build_model
from emg2qwerty_ssm.models.encoder import RotationInvariantEncoder, SparseReLU, make_activation
from emg2qwerty_ssm.models.summary import compose_model_config, layer_table, main

PAPER = ("s4_large", "tc_s4_medium", "tc_s4_small")

# docs/models.md#parameter-counts: per-stage parameter split
PARAMS = {
    "s4_large": {
        "mlp": 2_280,
        "hf": 0,
        "enc": 30_976,
        "s4d": 1_187_840,
        "norms": 4_096,
        "dec": 38_550,
        "cls": 14_949,
        "total": 1_278_691,
    },
    "tc_s4_medium": {
        "mlp": 2_736,
        "hf": 449_154,
        "enc": 14_496,
        "s4d": 199_680,
        "norms": 1_536,
        "dec": 14_550,
        "cls": 14_949,
        "total": 697_101,
    },
    "tc_s4_small": {
        "mlp": 1_368,
        "hf": 141_858,
        "enc": 14_496,
        "s4d": 199_680,
        "norms": 1_536,
        "dec": 14_550,
        "cls": 14_949,
        "total": 388_437,
    },
}
# docs/models.md#cost-convention: core MAC/s, of which weight layers and SSM recurrences; other
# element-wise ops/s
COST = {
    "s4_large": (192_336_062.5, 157_248_062.5, 35_088_000, 1_272_000),
    "tc_s4_medium": (32_637_375, 30_573_375, 2_064_000, 272_000),
    "tc_s4_small": (13_581_375, 11_517_375, 2_064_000, 200_000),
}
HINTED_SCALARS = {"s4_large": 67_584, "tc_s4_medium": 25_344, "tc_s4_small": 25_344}


@pytest.fixture(scope="module")
def models() -> dict[str, EMGModel]:
    torch.manual_seed(0)
    return {name: build_model(compose_model_config([f"model={name}"])) for name in PAPER}


def _n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", PAPER)
def test_parameter_counts_and_split(models: dict[str, EMGModel], name: str) -> None:
    m, want = models[name], PARAMS[name]
    bb = m.backbone
    got = {
        "mlp": _n(m.encoder),
        "hf": _n(m.frontend),
        "enc": _n(bb.encoder),
        "s4d": _n(bb.s4_layers),
        "norms": _n(bb.norms),
        "dec": _n(bb.decoder),
        "cls": _n(m.classifier),
        "total": _n(m),
    }
    assert got == want


@pytest.mark.parametrize("name", PAPER)
def test_cost_matches_spec(models: dict[str, EMGModel], name: str) -> None:
    costs = models[name].cost()
    total, weight, ssm, other = COST[name]
    assert sum(c.weight_macs_per_s for c in costs) == pytest.approx(weight, rel=1e-12)
    assert sum(c.recurrent_macs_per_s for c in costs) == pytest.approx(ssm, rel=1e-12)
    assert sum(c.macs_per_s for c in costs) == pytest.approx(total, rel=1e-12)
    assert sum(c.other_ops_per_s for c in costs) == pytest.approx(other, rel=1e-12)
    # every trainable parameter is attributed to exactly one layer record
    assert sum(c.params for c in costs) == PARAMS[name]["total"]
    assert costs[-1].name == "classifier"
    assert costs[-1].output_rate_hz == pytest.approx(2000 / models[name].stride)


def test_cost_rates_follow_the_pools(models: dict[str, EMGModel]) -> None:
    rates = [c.input_rate_hz for c in models["s4_large"].cost() if c.name.endswith(".ssm")]
    assert rates == [500, 250, 125, 62.5, 31.25, 31.25, 31.25, 31.25]
    convs = [c for c in models["tc_s4_small"].cost() if c.name.startswith("frontend.layers")]
    assert [c.weight_macs_per_s for c in convs if c.kind == "conv"] == [
        3_456_000,
        2_304_000,
        1_200_000,
    ]


@pytest.mark.parametrize("name", ["s4_large", "tc_s4_small"])
def test_weight_macs_match_flop_counter(models: dict[str, EMGModel], name: str) -> None:
    """Independent check of the analytic weight MACs (cross-check in
    docs/models.md#macs-per-stage)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = models[name].eval()
    t = 20 * m.stride
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(torch.randn(t, 1, 2, 16))
    flops = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    # bmm is the FFT-mode kernel generation, not part of the streaming cost
    weight_flops = sum(
        v for k, v in flops.items() if k in ("aten.addmm", "aten.mm", "aten.convolution")
    )
    analytic = sum(c.weight_macs_per_s for c in m.cost())
    assert weight_flops / 2 / (t / 2000) == pytest.approx(analytic, rel=1e-9)


@pytest.mark.parametrize(
    ("name", "stride", "frames"),
    [("s4_large", 64, [125, 156, 156, 2531]), ("tc_s4_small", 96, [83, 104, 104, 1687])],
)
def test_stride_and_emission_lengths(
    models: dict[str, EMGModel], name: str, stride: int, frames: list[int]
) -> None:
    m = models[name]
    assert m.stride == stride
    lengths = torch.tensor([8000, 9999, 10000, 162000], dtype=torch.int32)
    # docs/recipe.md#emission-lengths-and-loss
    assert m.emission_lengths(lengths).tolist() == frames
    assert m.emission_lengths(lengths).dtype == torch.long


@pytest.mark.parametrize("name", PAPER)
def test_forward_shape_and_log_probs(models: dict[str, EMGModel], name: str) -> None:
    m = models[name].eval()
    t = 10 * m.stride + m.stride // 2
    with torch.no_grad():
        out = m(torch.randn(t, 2, 2, 16))
    assert out.shape == (10, 2, 99)
    assert int(m.emission_lengths(torch.tensor([t]))) == 10
    assert torch.allclose(out.exp().sum(-1), torch.ones(10, 2), atol=1e-5)


@pytest.mark.parametrize("name", PAPER)
def test_param_groups_follow_the_seed(models: dict[str, EMGModel], name: str) -> None:
    m = models[name]
    for model in (m, copy.deepcopy(m)):  # deepcopy drops Parameter attributes such as _optim
        groups = model.param_groups(2.5e-3)
        assert len(groups) == 2
        default, hinted = groups
        assert default["lr"] == 2.5e-3
        assert hinted["lr"] == 5e-4 and hinted["weight_decay"] == 0.0
        assert len(hinted["params"]) == 24
        assert sum(p.numel() for p in hinted["params"]) == HINTED_SCALARS[name]
        ids = [id(p) for g in groups for p in g["params"]]
        assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_stage_swaps_compose() -> None:
    ident = build_model(compose_model_config(["model=tc_s4_small", "model/frontend=identity"]))
    assert ident.stride == 4 and ident.frontend.out_features == 72
    assert ident.backbone.encoder.in_features == 72
    big = build_model(compose_model_config(["model=s4_large", "model/frontend=tc"]))
    assert big.stride == 4 * 24 * 16
    sized = compose_model_config(["model=tc_s4_small", "model.backbone.d_model=64"])
    assert build_model(sized).backbone.d_model == 64


def test_build_model_errors_name_the_field() -> None:
    cfg = compose_model_config(["model=tc_s4_small"])
    with pytest.raises(ValueError, match="input_kind"):
        build_model({**cfg, "input_kind": "video"})
    with pytest.raises(ValueError, match="frontend"):
        build_model({k: v for k, v in cfg.items() if k != "frontend"})
    bad = compose_model_config(
        ["model=tc_s4_small", "model/frontend=identity", "+model.frontend.out_channels=[1,2]"]
    )
    with pytest.raises(ValueError, match=r"(?s)model\.frontend.*out_channels.*~model"):
        build_model(bad)
    with pytest.raises(ValueError, match="model="):
        compose_model_config(["model.backbone.d_model=3"])


def test_a_model_composed_alone_reads_at_its_transforms_rate(tmp_path) -> None:
    from emg2qwerty_ssm.models.model import transforms_rate_hz

    # no transforms composed: the rate of conf/transforms/<input_kind>.yaml
    cfg = compose_model_config(["model=tds_conv_ctc"])
    assert "input_rate_hz" not in cfg and cfg.input_kind == "log_spectrogram"
    model = build_model(cfg)
    assert model.input_rate_hz == 125.0 and model.config["input_rate_hz"] == 125.0
    assert build_model(compose_model_config(["model=tc_s4_small"])).input_rate_hz == 2000.0
    # a model config that sets its own rate keeps it (checkpoints carry theirs)
    plain = build_model(compose_model_config(["model=tc_s4_small"])).config
    assert build_model({**plain, "input_rate_hz": 1000}).input_rate_hz == 1000.0
    with pytest.raises(ValueError, match=r"model\.input_rate_hz must be a positive number"):
        build_model({**plain, "input_rate_hz": "fast"})
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "raw.yaml").write_text("kind: log_spectrogram\n")
    with pytest.raises(ValueError, match=r"raw\.yaml: kind is 'log_spectrogram'"):
        transforms_rate_hz("raw", tmp_path)
    with pytest.raises(ValueError, match=r"set model\.input_rate_hz"):
        transforms_rate_hz("log_spectrogram", tmp_path)


def test_encoder_pools_then_applies_band_mlps() -> None:
    torch.manual_seed(0)
    enc = RotationInvariantEncoder(mlp_features=[5], input_mean_pooling=4).eval()
    x = torch.randn(10, 3, 2, 16)  # 10 samples: 2 whole pools, 2 samples dropped
    out = enc(x)
    assert out.shape == (2, 3, 10)
    pooled = x[:8].reshape(2, 4, 3, 2, 16).mean(1)
    for b in range(2):
        mlp = enc.mlps[b]
        ref = torch.relu(mlp.norms[0](mlp.linear_layers[0](pooled[:, :, b])))
        assert torch.allclose(out[..., 5 * b : 5 * (b + 1)], ref, atol=1e-6)


def test_encoder_full_rotation_set_is_rotation_invariant() -> None:
    torch.manual_seed(0)
    enc = RotationInvariantEncoder(mlp_features=[8], offsets=list(range(16)), norm="batchnorm")
    enc.eval()
    x = torch.randn(6, 2, 2, 16)
    assert torch.allclose(enc(x), enc(x.roll(3, dims=3)), atol=1e-5)
    single = RotationInvariantEncoder(mlp_features=[8]).eval()
    assert not torch.allclose(single(x), single(x.roll(3, dims=3)), atol=1e-3)


def test_encoder_accepts_spectrogram_input() -> None:
    enc = RotationInvariantEncoder(mlp_features=[12], in_features=16 * 33, offsets=[-1, 0, 1])
    assert enc(torch.randn(7, 2, 2, 16, 33)).shape == (7, 2, 24)
    with pytest.raises(ValueError, match="expects input"):
        enc(torch.randn(7, 2, 3, 16, 33))


def test_sparse_relu_is_relu_and_records_activity() -> None:
    act = make_activation("sparse_relu_10")
    assert isinstance(act, SparseReLU) and act.sharpness == 10.0
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    act.record_activity = True
    y = act(x)
    assert torch.equal(y, torch.relu(x))
    y.sum().backward()
    assert torch.equal(x.grad, (x > 0).float())
    assert act.activity.item() == pytest.approx(4 / 9)
    with pytest.raises(ValueError, match="activation"):
        make_activation("sparse_relu_x")


def test_summary_prints_layer_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model=tc_s4_small"]) == 0
    out = capsys.readouterr().out
    assert "frontend.layers.0" in out and "backbone.s4_layers.7.ssm" in out
    assert "388,437" in out and "13,581,375" in out
    total_line = next(line for line in out.splitlines() if line.startswith("total"))
    assert "20.833" in total_line
    m = build_model(compose_model_config(["model=s4_large"]))
    assert "192,336,062.5" in layer_table(m)
