"""GRU and EGRU front-ends: shapes, streaming = offline, the EGRU's events and gradients, cost."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from egru_reference import egru_scan_reference
from hydra import compose, initialize_config_dir
from torch import nn

from emg2qwerty_ssm.models import build_model
from emg2qwerty_ssm.models.cost import model_card
from emg2qwerty_ssm.models.recurrent import (
    EGRUFrontend,
    EGRUScan,
    GRUFrontend,
    SpikeFunction,
    activity_rates,
    gru_cell,
    reset_activity,
)

FRONTENDS = [GRUFrontend, EGRUFrontend]


def _eval_with_stats(m: nn.Module) -> nn.Module:
    """Eval mode with non-trivial BatchNorm running statistics."""
    with torch.no_grad():
        m.norm.running_mean.uniform_(-0.5, 0.5)
        m.norm.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.mark.parametrize("cls", FRONTENDS)
@pytest.mark.parametrize("mean_pooling", [1, 3])
def test_shapes_and_rates(cls, mean_pooling):
    torch.manual_seed(0)
    m = cls(10, out_features=20, d_hidden=8, mean_pooling=mean_pooling)
    assert m.stride == 24 and m.left_context is None
    assert (m.in_features, m.out_features) == (10, 20)
    x = torch.randn(24 * 3 + 23, 2, 10)
    assert m(x).shape == (3, 2, 20)
    assert m(x[:23]).shape == (0, 2, 20)
    no_linear = cls(10, out_features=None, d_hidden=8, norm="none")
    assert no_linear.out_features == 8 and no_linear(x).shape == (3, 2, 8)


@pytest.mark.parametrize("cls", FRONTENDS)
@pytest.mark.parametrize(
    ("mean_pooling", "reduction", "chunks"),
    [(1, "mean", [1, 5, 30, 2, 70]), (2, "last", [7, 13, 50, 11, 30]), (4, "mean", [5, 19, 97])],
)
def test_streaming_equals_offline(cls, mean_pooling, reduction, chunks):
    torch.manual_seed(1)
    m = _eval_with_stats(
        cls(
            6,
            out_features=12,
            d_hidden=8,
            mean_pooling=mean_pooling,
            reduction=reduction,
            dropout=0.2,
        )
    )
    x = torch.randn(sum(chunks), 3, 6, dtype=torch.float64)
    m.double()
    with torch.no_grad():
        offline = m(x)
        state, outs, start = m.initial_state(3), [], 0
        for size in chunks:
            out, state = m.forward_stream(x[start : start + size], state)
            outs.append(out)
            start += size
    streamed = torch.cat(outs)
    assert offline.shape[0] == sum(chunks) // 24 > 0
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", FRONTENDS)
def test_causal_prefix(cls):
    """Offline on a prefix gives the first frames of the offline output on the whole input."""
    torch.manual_seed(2)
    m = _eval_with_stats(cls(5, out_features=7, d_hidden=6, mean_pooling=2))
    x = torch.randn(24 * 5, 2, 5)
    with torch.no_grad():
        torch.testing.assert_close(m(x[: 24 * 3 + 10]), m(x)[:3])


@pytest.mark.parametrize("cls", FRONTENDS)
def test_detach_between_blocks_truncates_gradient_only(cls):
    torch.manual_seed(3)
    kwargs = dict(out_features=4, d_hidden=6, block_length=4, norm="none")
    if cls is EGRUFrontend:
        kwargs["zoneout"] = 0.0
    plain = cls(3, **kwargs).train()
    detached = cls(3, detach_between_blocks=True, **kwargs).train()
    detached.load_state_dict(plain.state_dict())
    x = torch.randn(12, 1, 3)
    outputs, grads = [], []
    for m in (plain, detached):
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        y[2].sum().backward()  # output of the last block
        outputs.append(y.detach())
        grads.append(xi.grad)
    torch.testing.assert_close(outputs[1], outputs[0])
    # Without detach the last block's output depends on the first block's inputs (gradient
    # flows through the recurrent state); with detach it does not.
    assert grads[0][:4].abs().sum() > 0
    assert torch.all(grads[1][:8] == 0) and grads[1][8:].abs().sum() > 0


def test_gru_cell_matches_torch_grucell():
    torch.manual_seed(4)
    ref = nn.GRUCell(5, 7).double()
    x, h = torch.randn(3, 5).double(), torch.randn(3, 7).double()
    gx = F.linear(x, ref.weight_ih, ref.bias_ih)
    torch.testing.assert_close(gru_cell(gx, h, h, ref.weight_hh, ref.bias_hh), ref(x, h))


@pytest.mark.parametrize("reduction", ["mean", "last"])
def test_gru_frontend_matches_torch_gru_pipeline(reduction):
    """Independent reference: avg-pool, torch GRU with the same weights, block reduce, head."""
    torch.manual_seed(5)
    m = _eval_with_stats(
        GRUFrontend(6, out_features=9, d_hidden=5, mean_pooling=2, reduction=reduction)
    )
    ref_gru = nn.GRU(6, 5)
    ref_gru.load_state_dict(
        {k.removeprefix("rnn."): v for k, v in m.state_dict().items() if k.startswith("rnn.")}
    )
    x = torch.randn(24 * 4 + 3, 2, 6)
    with torch.no_grad():
        pooled = F.avg_pool1d(x.permute(1, 2, 0), 2).permute(2, 0, 1)  # (T/2, N, C)
        h, _ = ref_gru(pooled)
        blocks = h[: 4 * 12].reshape(4, 12, 2, 5)
        blocks = blocks.mean(1) if reduction == "mean" else blocks[:, -1]
        z = F.linear(blocks, m.linear.weight, m.linear.bias)
        bn = m.norm
        z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        torch.testing.assert_close(m(x), torch.relu(z))


def test_egru_loads_gru_weights_and_fires_with_its_rule():
    """EGRU uses torch.nn.GRU's parameter layout; check one step by hand."""
    torch.manual_seed(6)
    egru = EGRUFrontend(4, d_hidden=5, zoneout=0.0).double().eval()
    gru = nn.GRU(4, 5).double()
    egru.weight_ih.data.copy_(gru.weight_ih_l0)
    egru.weight_hh.data.copy_(gru.weight_hh_l0)
    egru.bias_ih.data.copy_(gru.bias_ih_l0)
    egru.bias_hh.data.copy_(gru.bias_hh_l0)
    x = torch.randn(2, 3, 4).double()
    y, (c, y_last) = egru._scan(x, egru._zero_state(3, None, torch.float64))
    # step 0 from zero state: c equals the GRU's first hidden state
    c0 = gru(x[:1])[0][0]
    theta = egru.threshold
    fired = c0 > theta
    torch.testing.assert_close(y[0], torch.where(fired, c0, torch.zeros_like(c0)))
    # step 1: gates read the sparse output y0, the convex update uses the reduced state
    c_state0 = c0 - fired.double() * theta
    gx1 = F.linear(x[1], gru.weight_ih_l0, gru.bias_ih_l0)
    c1 = gru_cell(gx1, y[0], c_state0, gru.weight_hh_l0, gru.bias_hh_l0)
    torch.testing.assert_close(y[1], torch.where(c1 > theta, c1, torch.zeros_like(c1)))
    torch.testing.assert_close(c, c1 - (c1 > theta).double() * theta)
    torch.testing.assert_close(y_last, y[1])


@pytest.mark.parametrize("zoneout", ["mask", 0.9, 1.0])
def test_egru_scan_backward_matches_autograd_reference(zoneout):
    """The hand-written BPTT equals autograd through the step-by-step reference (float64)."""
    torch.manual_seed(12)
    steps, batch, h = 30, 3, 6
    gen = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    gx, c0, y0 = leaf(steps, batch, 3 * h, scale=2.0), leaf(batch, h, scale=0.5), leaf(batch, h)
    w, b = leaf(3 * h, h, scale=0.7), leaf(3 * h, scale=0.3)
    theta = torch.rand(h, generator=gen, dtype=torch.float64).mul(0.6).requires_grad_()
    keep = (torch.rand(steps, batch, h, generator=gen) > 0.2).double()
    weights = torch.randn(steps, batch, h, generator=gen, dtype=torch.float64)
    inputs = (gx, c0, y0, w, b, theta)
    results = []
    for use_reference in (True, False):
        if use_reference:
            k = keep if zoneout == "mask" else zoneout
            ys, c = egru_scan_reference(gx, c0, y0, w, b, theta, k, 0.7, 1.0)
        else:
            k_mask, k_const = (keep, 1.0) if zoneout == "mask" else (None, zoneout)
            ys, c, events = EGRUScan.apply(gx, c0, y0, w, b, theta, k_mask, k_const, 0.7, 1.0)
            assert events == (ys != 0).sum()
        loss = (ys * weights).sum() + c.square().sum()
        results.append((ys.detach(), c.detach(), torch.autograd.grad(loss, inputs)))
    (ys_ref, c_ref, g_ref), (ys_new, c_new, g_new) = results
    assert 0.1 < (ys_ref != 0).double().mean() < 0.9  # both branches of the step are exercised
    torch.testing.assert_close(ys_new, ys_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(c_new, c_ref, rtol=0, atol=1e-12)
    names = ["gx", "c0", "y0", "weight_hh", "bias_hh", "theta"]
    for name, a, e in zip(names, g_new, g_ref, strict=True):
        assert e.abs().sum() > 0, name
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10, msg=name)


def test_spike_function_pseudo_derivative():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.25, 0.5, 2.0], requires_grad=True)
    out = SpikeFunction.apply(v, 0.7, 1.0)
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    out.sum().backward()
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 0.35, 0.7, 0.525, 0.35, 0.0]))
    w = torch.tensor([0.75, 3.0], requires_grad=True)
    SpikeFunction.apply(w, 0.5, 2.0).sum().backward()  # support 2: max(0, 1 - |v|/2)
    torch.testing.assert_close(w.grad, torch.tensor([0.5 * (1 - 0.375), 0.0]))


def test_egru_activity_rate_counts_events():
    torch.manual_seed(7)
    m = EGRUFrontend(4, d_hidden=16).eval()
    x = torch.randn(48, 3, 4) * 3
    with torch.no_grad():
        y, _ = m._scan(x, m._zero_state(3, None, x.dtype))
    # an event is exactly a non-zero output: c > theta >= 0
    fraction = (y != 0).double().mean().item()
    assert 0.0 < m.last_activity_rate < 1.0
    assert m.last_activity_rate == pytest.approx(fraction)
    with torch.no_grad():
        m(x)
        m(x[:24])
    assert 0.0 <= m.activity_rate <= 1.0
    assert m._unit_steps == (48 + 48 + 24) * 3 * 16
    # thresholds at 1 cannot be crossed: |c| < 1 (tanh candidates, convex updates)
    m.reset_activity()
    assert m.activity_rate is None
    with torch.no_grad():
        m.threshold.fill_(1.0)
        # the head sees zeros only
        torch.testing.assert_close(m(x), m._head(torch.zeros(2, 3, 16)))
    assert m.activity_rate == 0.0


def test_egru_thresholds_clamped_to_unit_interval():
    m = EGRUFrontend(3, d_hidden=4)
    with torch.no_grad():
        m.threshold.copy_(torch.tensor([-0.5, 0.2, 1.5, 0.9]))
    m(torch.randn(24, 2, 3))
    assert m.threshold.tolist() == pytest.approx([0.0, 0.2, 1.0, 0.9])


def test_egru_gradients_flow_through_surrogate():
    torch.manual_seed(8)
    m = EGRUFrontend(6, d_hidden=16, out_features=10).train()
    x = torch.randn(24 * 3, 4, 6, requires_grad=True)
    m(x).pow(2).mean().backward()
    for name in ("threshold", "weight_hh", "weight_ih", "bias_hh"):
        grad = getattr(m, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert 0.0 < m.activity_rate < 1.0


def test_egru_zoneout_random_in_training_only():
    torch.manual_seed(9)
    m = EGRUFrontend(4, d_hidden=8, zoneout=0.5, norm="none")
    x = torch.randn(48, 2, 4)
    with torch.no_grad():
        m.train()
        assert not torch.equal(m(x), m(x))
        m.eval()
        torch.testing.assert_close(m(x), m(x))


@pytest.mark.parametrize("cls", FRONTENDS)
def test_cost(cls):
    torch.manual_seed(10)
    m = cls(72, out_features=150, d_hidden=64, mean_pooling=2)
    blocks = {b.name: b for b in m.cost(500.0)}
    rnn = blocks["rnn"]
    assert rnn.kind == cls.kind
    assert rnn.input_rate_hz == 250.0 and blocks["linear"].output_rate_hz == pytest.approx(500 / 24)
    assert rnn.weight_macs_per_s == pytest.approx(3 * (72 * 64 + 64 * 64) * 250.0)
    assert blocks["linear"].weight_macs_per_s == pytest.approx(64 * 150 * 500 / 24)
    assert sum(b.params for b in blocks.values()) == sum(p.numel() for p in m.parameters())
    assert rnn.state_size >= 64
    if cls is GRUFrontend:
        assert rnn.event_macs_per_s is None
        return
    dense_input = 3 * 72 * 64 * 250.0
    # before any forward: no measurement, dense upper bound
    assert rnn.event_macs_per_s == pytest.approx(rnn.weight_macs_per_s)
    with torch.no_grad():
        m.eval()(torch.randn(96, 2, 72))
    event = m.cost(500.0)[1].event_macs_per_s
    expected = dense_input + 3 * 64 * 64 * 250.0 * m.activity_rate
    assert event == pytest.approx(expected)
    assert dense_input <= event < rnn.weight_macs_per_s


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"block_length": 24, "mean_pooling": 5}, "block_length"),
        ({"reduction": "max"}, "reduction"),
        ({"norm": "groupnorm"}, "norm"),
        ({"dropout": 1.0}, "dropout"),
        ({"d_hidden": 0}, "d_hidden"),
    ],
)
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GRUFrontend(8, **kwargs)


def test_egru_bad_config_names_the_field():
    with pytest.raises(ValueError, match="zoneout"):
        EGRUFrontend(8, zoneout=1.5)
    with pytest.raises(ValueError, match="threshold_mean"):
        EGRUFrontend(8, threshold_mean=0.0)
    with pytest.raises(ValueError, match=r"\(T, N, 8\)"):
        GRUFrontend(8)(torch.randn(24, 2, 9))


# -- composed models ---------------------------------------------------------------------------

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _compose_model(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return compose(overrides=list(overrides)).model


def test_any_model_takes_the_gru_frontend():
    cfg = _compose_model("+model=tc_s4_small", "model/frontend=gru")
    assert cfg.frontend._target_.endswith("GRUFrontend") and cfg.name == "tc_s4_small"
    model = build_model(cfg)
    assert isinstance(model.frontend, GRUFrontend)
    assert model.frontend.in_features == 72 and model.backbone.in_features == 150
    assert model.stride == 96 and model.left_context is None
    lengths = torch.tensor([9999, 960, 95])
    torch.testing.assert_close(model.emission_lengths(lengths), lengths // 96)
    assert model.eval()(torch.randn(960, 1, 2, 16)).shape == (10, 1, 99)


@pytest.mark.parametrize("name", ["gru_s4_small", "egru_s4_small"])
def test_recurrent_models_stream_like_offline(name):
    torch.manual_seed(11)
    model = build_model(_compose_model(f"+model={name}")).eval()
    assert model.stride == 96 and model.name == name
    x = torch.randn(96 * 6 + 50, 2, 2, 16)
    with torch.no_grad():
        offline = model(x)
        state, outs, start = model.initial_state(2), [], 0
        for size in [1, 250, 77, 160, 138]:
            out, state = model.forward_stream(x[start : start + size], state)
            outs.append(out)
            start += size
    assert start == x.shape[0] and offline.shape == (6, 2, 99)
    torch.testing.assert_close(torch.cat(outs), offline, rtol=1e-5, atol=1e-5)
    card = model_card(model)
    assert card["params"] == card["params_from_blocks"]
    if name == "egru_s4_small":
        rate = model.frontend.activity_rate
        assert 0.0 < rate < 1.0
        assert activity_rates(model) == {"frontend": rate}
        assert card["event_macs_per_second"] < card["macs_per_second"]
        reset_activity(model)
        assert activity_rates(model) == {}
    else:
        assert activity_rates(model) == {}


@pytest.mark.parametrize("cls", FRONTENDS)
def test_runs_under_bf16_autocast(cls):
    torch.manual_seed(13)
    m = cls(6, out_features=8, d_hidden=8).train()
    x = torch.randn(48, 2, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.float().square().mean().backward()
    assert y.shape == (2, 2, 8) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_egru_model_checkpoint_round_trip(tmp_path):
    from emg2qwerty_ssm.models import load_model, save_model

    torch.manual_seed(14)
    model = build_model(_compose_model("+model=egru_s4_small")).eval()
    save_model(model, tmp_path / "egru.ckpt")
    torch.manual_seed(15)  # a rebuilt EGRU draws other thresholds; loading must restore them
    loaded = load_model(tmp_path / "egru.ckpt")
    torch.testing.assert_close(loaded.frontend.threshold, model.frontend.threshold)
    x = torch.randn(96 * 3, 1, 2, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
