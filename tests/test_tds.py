"""The emg2qwerty TDS-Conv-CTC baseline: size, cost, emission lengths, causality, streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from emg2qwerty_ssm.models import build_model
from emg2qwerty_ssm.models.cost import flop_counter_weight_macs, model_card
from emg2qwerty_ssm.models.tds import (
    SpectrogramMLPEncoder,
    TDSConv2dBlock,
    TDSConvBackbone,
    TDSFullyConnectedBlock,
)

# emg2qwerty's README / paper: the baseline has ~5.3 M parameters and the hybrid-networks
# paper quotes ~1.046 G MAC/s for it at 125 Hz spectrogram frames.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PUBLISHED_PARAMS = 5.3e6
PUBLISHED_MACS = 1.046e9


@pytest.fixture(scope="module")
def baseline():
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose(overrides=["+model=tds_conv_ctc"])
    torch.manual_seed(0)
    return build_model(cfg.model)


def _randomize_norms(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def test_parameter_count(baseline):
    f, c, k, bins = 768, 24, 32, 16 * 33
    mlp = 2 * (bins * 384 + 384)
    per_pair = (c * c * k + c + 2 * f) + (2 * (f * f + f) + 2 * f)
    expected = 2 * 32 + mlp + 4 * per_pair + (f * 99 + 99)
    params = sum(p.numel() for p in baseline.parameters())
    assert params == expected
    assert params == pytest.approx(PUBLISHED_PARAMS, rel=0.01)


def test_macs_per_second(baseline):
    card = model_card(baseline)
    assert baseline.input_rate_hz == 125
    assert card["macs_per_second"] == pytest.approx(PUBLISHED_MACS, rel=0.01)
    # per part: MLP on 3 rotations x 2 bands, 4 x (Conv2d over 32 width positions + 2 Linear)
    stages = {s["name"]: s["macs_per_second"] for s in card["stages"]}
    assert stages["encoder"] == pytest.approx(2 * 3 * 528 * 384 * 125)
    assert stages["backbone"] == pytest.approx(4 * (24 * 24 * 32 * 32 + 2 * 768**2) * 125)
    assert card["params_from_blocks"] == card["params"]


def test_encoder_macs_match_flop_counter():
    enc = SpectrogramMLPEncoder().eval()
    x = torch.randn(8, 1, 2, 16, 33)
    measured = flop_counter_weight_macs(enc, x, input_rate_hz=125.0)["total"]
    analytic = sum(b.weight_macs_per_s for b in enc.cost(125.0))
    assert measured == pytest.approx(analytic)


def test_tds_blocks_match_flop_counter():
    """Conv2d(24, 24, (1, 32)) over 32 width positions and the two Linears, per output frame."""
    conv, fc = TDSConv2dBlock(24, 32, 32), TDSFullyConnectedBlock(768)
    x = torch.randn(31 + 40, 1, 768)
    per_frame = flop_counter_weight_macs(conv, x, input_rate_hz=1.0)["total"] * x.shape[0] / 40
    assert per_frame == pytest.approx(24 * 24 * 32 * 32)
    per_frame = flop_counter_weight_macs(fc, x, input_rate_hz=1.0)["total"]
    assert per_frame == pytest.approx(2 * 768 * 768)


def test_emission_lengths_and_shapes(baseline):
    assert baseline.stride == 1 and baseline.left_context == 4 * 31
    lengths = torch.tensor([200, 125, 124, 10])
    torch.testing.assert_close(baseline.emission_lengths(lengths), torch.tensor([76, 1, 0, 0]))
    out = baseline.eval()(torch.randn(200, 2, 2, 16, 33))
    assert out.shape == (76, 2, 99)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(76, 2))


def test_encoder_rotates_electrodes_and_normalizes_per_channel():
    """Reference: per-channel BN (eval), per band the MLP on electrodes rolled by -1/0/+1."""
    torch.manual_seed(4)
    enc = _randomize_norms(SpectrogramMLPEncoder(mlp_features=[5])).double()
    x = torch.randn(4, 2, 2, 16, 33, dtype=torch.float64)
    bn = enc.spec_norm.batch_norm
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(2, 16, 1)
    shift = bn.bias.reshape(2, 16, 1) - bn.running_mean.reshape(2, 16, 1) * scale
    normed = x * scale + shift
    bands = []
    for b in range(2):
        lin = enc.mlp.mlps[b].linear_layers[0]
        electrodes = [torch.roll(normed[:, :, b], o, dims=2) for o in (-1, 0, 1)]  # (T, N, 16, 33)
        outs = [torch.relu(F.linear(e.reshape(4, 2, -1), lin.weight, lin.bias)) for e in electrodes]
        bands.append(torch.stack(outs).mean(0))
    torch.testing.assert_close(enc(x), torch.cat(bands, dim=-1))


def test_conv_block_is_a_causal_valid_convolution():
    """Independent reference: per width position, conv1d over time + ReLU + residual + LN."""
    torch.manual_seed(1)
    block = TDSConv2dBlock(channels=3, width=4, kernel_width=5).double()
    x = torch.randn(20, 2, 12, dtype=torch.float64)
    w = block.conv2d.weight[:, :, 0, :]  # (C_out, C_in, k)
    per_width = x.reshape(20, 2, 3, 4).permute(3, 1, 2, 0)  # (width, N, C, T)
    y = torch.stack([F.conv1d(p, w, block.conv2d.bias) for p in per_width])  # (width, N, C, T-4)
    y = torch.relu(y).permute(3, 1, 2, 0).reshape(16, 2, 12)
    expected = F.layer_norm(y + x[4:], (12,), block.layer_norm.weight, block.layer_norm.bias)
    torch.testing.assert_close(block(x), expected)


def test_receptive_field_is_left_context():
    torch.manual_seed(2)
    bb = _randomize_norms(TDSConvBackbone(48, block_channels=[4, 6], kernel_width=5))
    assert bb.left_context == 8
    x = torch.randn(30, 1, 48)
    with torch.no_grad():
        base = bb(x)
        x2 = x.clone()
        x2[15] += 1.0
        changed = (bb(x2) - base).abs().amax(dim=(1, 2)) > 1e-9
    # output frame j covers input frames j .. j + 8: frame 15 reaches outputs 7 .. 15
    assert base.shape[0] == 22
    assert changed.nonzero().flatten().tolist() == list(range(7, 16))


@pytest.mark.parametrize("chunk", [3, 17, 50, 125])
def test_streaming_equals_offline(baseline, chunk):
    model = _randomize_norms(baseline)
    torch.manual_seed(3)
    x = torch.randn(200, 2, 2, 16, 33)
    with torch.no_grad():
        offline = model(x)
        state, outs = model.initial_state(2), []
        for start in range(0, x.shape[0], chunk):
            out, state = model.forward_stream(x[start : start + chunk], state)
            outs.append(out)
    streamed = torch.cat(outs)
    assert offline.shape[0] == 200 - 124
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)


def test_bad_inputs_and_config():
    with pytest.raises(ValueError, match="log_spectrogram"):
        SpectrogramMLPEncoder()(torch.randn(10, 2, 2, 16))
    with pytest.raises(ValueError, match="block_channels entry 25"):
        TDSConvBackbone(768, block_channels=[24, 25])
    with pytest.raises(ValueError, match=r"\(T, N, 768\)"):
        TDSConvBackbone(768)(torch.randn(200, 1, 700))
