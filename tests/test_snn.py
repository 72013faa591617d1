"""The spiking front-end (``emg2qwerty_ssm.models.snn``): surrogates, neuron dynamics, resets,
reductions, per-block BatchNorm, streaming, activity regulariser, cost and a smoke training run."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from emg2qwerty_ssm import CONFIG_DIR
from emg2qwerty_ssm.models import build_model
from emg2qwerty_ssm.models.cost import model_card
from emg2qwerty_ssm.models.snn import (
    SNNFrontend,
    activity_metrics,
    regularization_loss,
    reset_activity,
)
from emg2qwerty_ssm.models.snn_layers import BlockBatchNorm1d, LIFNeurons, SynapseFilter
from emg2qwerty_ssm.models.snn_surrogate import (
    SUGAR_ALPHA,
    ATanSpike,
    SugarReLU,
    atan_smooth_step,
    post_reduction_activation,
)

torch.set_num_threads(1)


def _central_difference(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return (f(x + eps) - f(x - eps)) / (2 * eps)


# ----------------------------------------------------------------------------- surrogates
@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
def test_atan_spike_is_a_step_with_the_derivative_of_the_smooth_arctan_step(alpha) -> None:
    x = torch.linspace(-2, 2, 41, dtype=torch.float64).requires_grad_()
    s = ATanSpike.apply(x, alpha)
    assert torch.equal(s.detach(), (x.detach() >= 0).double())  # H(0) = 1, as spikingjelly
    (grad,) = torch.autograd.grad(s.sum(), x)
    expected = _central_difference(lambda z: atan_smooth_step(z, alpha), x.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9)
    assert grad[20] == pytest.approx(alpha / 2)  # the peak at the threshold


def test_sugar_is_relu_forward_with_the_b_silu_derivative_backward() -> None:
    x = torch.linspace(-4, 4, 33, dtype=torch.float64).requires_grad_()
    y = SugarReLU.apply(x)
    assert torch.equal(y.detach(), torch.relu(x.detach()))
    (grad,) = torch.autograd.grad(y.sum(), x)
    b_silu = lambda z: (z + SUGAR_ALPHA) * torch.sigmoid(z) - SUGAR_ALPHA / 2  # noqa: E731
    torch.testing.assert_close(grad, _central_difference(b_silu, x.detach()), rtol=1e-6, atol=1e-9)


def test_post_reduction_activations_and_bad_names() -> None:
    x = torch.randn(5, 3)
    for name in ("relu", "sparse_relu_10", "sparse_relu_tie_5", "sparse_sugar_4"):
        assert torch.equal(post_reduction_activation(name)(x), torch.relu(x))
    assert torch.equal(post_reduction_activation("none")(x), x)
    assert torch.allclose(post_reduction_activation("gelu")(x), nn.functional.gelu(x))
    for bad in ("tanh", "sparse_relu_x", "sparse_sugar"):
        with pytest.raises(ValueError, match="activation_post_reduction"):
            post_reduction_activation(bad)


# ----------------------------------------------------------------------------- neurons
def _reference_lif(x, tau, decay_input, v_th, v_reset, detach_reset, alpha, v0):
    """spikingjelly's LIFNode equations written out literally, step by step."""
    v, spikes, vs = v0, [], []
    for t in range(x.shape[0]):
        if decay_input:
            h = v + (x[t] - (v - (v_reset or 0.0))) / tau
        else:
            h = v - (v - (v_reset or 0.0)) / tau + x[t]
        s = ATanSpike.apply(h - v_th, alpha)
        sd = s.detach() if detach_reset else s
        v = h - sd * v_th if v_reset is None else (1.0 - sd) * h + sd * v_reset
        spikes.append(s)
        vs.append(v)
    return torch.stack(spikes), torch.stack(vs)


@pytest.mark.parametrize("decay_input", [True, False])
@pytest.mark.parametrize("v_reset", [0.0, -0.3, None])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_lif_matches_the_literal_equations_values_and_gradients(
    decay_input, v_reset, detach_reset
) -> None:
    torch.manual_seed(0)
    x = (torch.randn(30, 2, 4, dtype=torch.float64) * 1.5).requires_grad_()
    lif = LIFNeurons("lif", 3.0, decay_input, 0.8, v_reset, detach_reset, 2.0)
    v0 = torch.full((2, 4), lif.initial_v(), dtype=torch.float64)
    spikes, v_seq, v_last = lif.scan(x, v0, None)
    ref_s, ref_v = _reference_lif(x, 3.0, decay_input, 0.8, v_reset, detach_reset, 2.0, v0)
    assert 0 < spikes.mean() < 1
    torch.testing.assert_close(spikes, ref_s)
    torch.testing.assert_close(v_seq, ref_v)
    assert torch.equal(v_last, v_seq[-1])
    g = torch.autograd.grad((spikes.sum() + v_seq.pow(2).sum()), x)[0]
    g_ref = torch.autograd.grad((ref_s.sum() + ref_v.pow(2).sum()), x)[0]
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("neuron", ["lif", "plif"])
@pytest.mark.parametrize("v_reset", [0.2, None])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("spiking", [True, False])
@pytest.mark.parametrize("detach_every", [None, 4])
def test_hand_written_scan_equals_autograd_through_the_reference_loop(
    neuron, v_reset, detach_reset, spiking, detach_every
) -> None:
    torch.manual_seed(7)
    lif = LIFNeurons(neuron, 2.5, True, 0.7, v_reset, detach_reset, 2.0, spiking).double()
    x = (torch.randn(12, 3, 5, dtype=torch.float64) * 1.5).requires_grad_()
    v0 = (torch.rand(3, 5, dtype=torch.float64) * 0.5).requires_grad_()
    weights = torch.randn(3, 12, 3, 5, dtype=torch.float64)  # a generic loss of every output
    results = []
    for scan in (lif.scan, lif.scan_reference):
        out, v_seq, last = scan(x, v0, detach_every)
        loss = (weights[0] * out).sum() + (weights[1] * v_seq).sum() + (weights[2, 0] * last).sum()
        params = [x, v0, *lif.parameters()]
        results.append((out, v_seq, last, torch.autograd.grad(loss, params)))
    (out, v_seq, last, grads), (r_out, r_v, r_last, r_grads) = results
    if spiking:
        assert 0 < out.mean() < 1
    torch.testing.assert_close(out, r_out)
    torch.testing.assert_close(v_seq, r_v)
    torch.testing.assert_close(last, r_last)
    assert last.requires_grad == r_last.requires_grad
    for g, r in zip(grads, r_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_synapse_filter_scan_equals_the_reference_loop_values_and_gradients() -> None:
    torch.manual_seed(9)
    syn = SynapseFilter(3.0).double()
    assert torch.sigmoid(syn.w).item() == pytest.approx(1 / 3.0)
    s = (torch.rand(15, 2, 4, dtype=torch.float64) < 0.3).double().requires_grad_()
    i0 = torch.rand(2, 4, dtype=torch.float64).requires_grad_()
    weights = torch.randn(2, 15, 2, 4, dtype=torch.float64)
    results = []
    for scan in (syn.scan, syn.scan_reference):
        out, last = scan(s, i0)
        loss = (weights[0] * out).sum() + (weights[1, 0] * last).sum()
        results.append((out, last, torch.autograd.grad(loss, [s, i0, syn.w])))
    (out, last, grads), (r_out, r_last, r_grads) = results
    torch.testing.assert_close(out, r_out)
    torch.testing.assert_close(last, r_last)
    for g, r in zip(grads, r_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_reset_modes_by_hand() -> None:
    x = torch.tensor([[[3.0]], [[0.0]], [[3.0]]])  # decay_input, tau 2: h = v/2 + x/2 (+ v_r/2)
    hard = LIFNeurons("lif", 2.0, True, 1.0, -0.5, False, 2.0)
    assert hard.initial_v() == -0.5  # spikingjelly starts at v_reset
    s, v, _ = hard.scan(x, torch.full((1, 1), -0.5), None)
    # h1 = -0.5 + (3 - 0) / 2 = 1.0 -> spike, v = -0.5; h2 = -0.5 + (0 - 0)/2 = -0.5; h3 = 1.0
    assert s.flatten().tolist() == [1.0, 0.0, 1.0]
    assert v.flatten().tolist() == [-0.5, -0.5, -0.5]
    soft = LIFNeurons("lif", 2.0, True, 1.0, None, False, 2.0)
    s, v, _ = soft.scan(x, torch.zeros(1, 1), None)
    # h1 = 1.5 -> spike, v = 0.5; h2 = 0.25; h3 = 0.25 + (3 - 0.25)/2 = 1.625 -> v = 0.625
    assert s.flatten().tolist() == [1.0, 0.0, 1.0]
    torch.testing.assert_close(v.flatten(), torch.tensor([0.5, 0.25, 0.625]))


def test_detach_reset_removes_only_the_reset_path_of_the_gradient() -> None:
    # One step above threshold: v = h - s * theta. d v / d x = dh/dx (1 - theta * sg(h - theta))
    # with the reset path, dh/dx without it.
    x = torch.tensor([[[2.6]]], dtype=torch.float64, requires_grad=True)
    sg = 2.0 / 2 / (1 + (math.pi / 2 * 2.0 * (1.3 - 1.0)) ** 2)  # h = 1.3, theta = 1
    for detach, expected in ((False, 0.5 * (1 - sg)), (True, 0.5)):
        lif = LIFNeurons("lif", 2.0, True, 1.0, None, detach, 2.0)
        _, _, v = lif.scan(x, torch.zeros(1, 1, dtype=torch.float64), None)
        (g,) = torch.autograd.grad(v.sum(), x)
        assert g.item() == pytest.approx(expected)


def test_plif_time_constant_is_learnable_with_exact_gradients_through_the_membrane() -> None:
    # The non-spiking read-out has no step: its gradient w.r.t. w equals finite differences.
    plif = LIFNeurons("plif", 4.0, True, 1.0, 0.0, False, 2.0, spiking=False).double()
    assert torch.sigmoid(plif.w).item() == pytest.approx(1 / 4.0)
    x = torch.randn(12, 3, 2, dtype=torch.float64)

    def loss(w: float) -> torch.Tensor:
        with torch.no_grad():
            plif.w.fill_(w)
        return plif.scan(x, torch.zeros(3, 2, dtype=torch.float64), None)[1].pow(2).sum()

    w0 = plif.w.item()
    numeric = (loss(w0 + 1e-6) - loss(w0 - 1e-6)) / 2e-6
    value = loss(w0)
    (g,) = torch.autograd.grad(value, plif.w)
    assert g.item() == pytest.approx(numeric.item(), rel=1e-5)


# ----------------------------------------------------------------------------- the front-end
def _identity_snn(c: int, **kw) -> SNNFrontend:
    m = SNNFrontend(c, layer_sizes=[c], batchnorm=False, bias=False, HLfreq_ratio=4, **kw)
    with torch.no_grad():
        m.linears[0].weight.copy_(torch.eye(c))
    return m


def test_mean_act_reduces_the_last_layers_spikes() -> None:
    torch.manual_seed(1)
    m = _identity_snn(3, reduction_mode="mean_act", tau_mem=2.0, v_threshold=0.5)
    x = torch.rand(16, 2, 3) * 2
    lif = m.neurons[0]
    spikes = lif.scan(x, torch.zeros(2, 3), None)[0]
    z = m(x)
    torch.testing.assert_close(z, spikes.reshape(4, 4, 2, 3).mean(1))
    assert set((z * 4).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


@pytest.mark.parametrize("reduction", ["mean_mempot", "last_mempot"])
def test_membrane_reductions_read_a_non_spiking_leaky_integrator(reduction) -> None:
    torch.manual_seed(2)
    tau = 3.0
    m = _identity_snn(2, reduction_mode=reduction, tau_mem=tau, v_threshold=0.01)
    assert not m.neurons[0].spiking and m.spiking_layers() == []
    x = torch.randn(12, 1, 2) * 5  # would spike a lot with threshold 0.01: it must not
    v, vs = torch.zeros(1, 2), []
    for t in range(12):
        v = v + (x[t] - v) / tau  # threshold infinity, reset 0
        vs.append(v)
    blocks = torch.stack(vs).reshape(3, 4, 1, 2)
    expected = blocks.mean(1) if reduction == "mean_mempot" else blocks[:, -1]
    torch.testing.assert_close(m(x), expected)


def test_without_neurons_in_the_last_layer_the_linear_output_is_reduced() -> None:
    m = _identity_snn(2, reduction_mode="mean_mempot", include_neurons_in_last_layer=False)
    x = torch.randn(8, 3, 2)
    torch.testing.assert_close(m(x), x.reshape(2, 4, 3, 2).mean(1))
    with pytest.raises(ValueError, match="include_neurons_in_last_layer"):
        SNNFrontend(2, include_neurons_in_last_layer=False, reduction_mode="mean_act")


def test_block_batchnorm_equals_batchnorm_applied_block_by_block() -> None:
    torch.manual_seed(3)
    x = torch.randn(12, 5, 4) * 3 + 1
    ours, ref = BlockBatchNorm1d(4), nn.BatchNorm1d(4)
    with torch.no_grad():
        ours.weight.uniform_()
        ref.weight.copy_(ours.weight)
    y = ours.forward_blocks(x, 4)
    expected = torch.cat([ref(b.reshape(-1, 4)).reshape(4, 5, 4) for b in x.split(4)])
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked.item() == 3
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours.forward_blocks(x, 4), ref(x.reshape(-1, 4)).reshape(x.shape))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"neuron": "plif", "v_reset": None, "tau_synapse_filter": 3.0},
        {"reduction_mode": "mean_act", "activation_post_reduction": "sparse_sugar_4"},
        {"reduction_mode": "last_mempot", "include_neurons_in_last_layer": False},
    ],
)
@pytest.mark.parametrize("train_mode", [False, True])
def test_streaming_equals_offline_for_any_chunking(kw, train_mode) -> None:
    torch.manual_seed(4)
    m = SNNFrontend(6, layer_sizes=[8, 5], HLfreq_ratio=6, v_threshold=0.5, **kw)
    x = torch.randn(6 * 7 + 4, 3, 6)  # a trailing partial block
    m.train(train_mode)  # training BatchNorm statistics are per block: streaming holds too
    with torch.no_grad():
        offline = m(x)
        assert offline.shape == (7, 3, 5)
        for chunk in (1, 5, 6, 13, 50):
            state, outs = m.initial_state(3), []
            for piece in x.split(chunk):
                out, state = m.forward_stream(piece, state)
                outs.append(out)
            torch.testing.assert_close(torch.cat(outs), offline, rtol=1e-5, atol=1e-6)
            assert state["buffer"].shape[0] == 4


def test_detach_hidden_on_chunks_cuts_gradients_between_blocks_only() -> None:
    torch.manual_seed(5)
    for detach in (False, True):
        m = _identity_snn(2, reduction_mode="mean_mempot", detach_hidden_on_chunks=detach)
        x = torch.randn(8, 1, 2, requires_grad=True)
        z = m(x)
        (g,) = torch.autograd.grad(z[1].sum(), x)
        assert g[4:].abs().sum() > 0  # the block itself
        assert (g[:4].abs().sum() > 0) != detach  # the previous block, unless detached
        with torch.no_grad():
            torch.testing.assert_close(m(x), z)  # forward values unchanged


def test_activity_is_counted_per_layer_and_the_regulariser_is_weight_times_squared_mean() -> None:
    torch.manual_seed(6)
    w = 0.3
    m = SNNFrontend(4, layer_sizes=[6, 5, 3], HLfreq_ratio=4, v_threshold=0.3,
                    reduction_mode="mean_act", sparsity_spiking_activity=w)  # fmt: skip
    x = torch.randn(16, 2, 4)
    m(x)
    # the hidden layers' spikes, recomputed stage by stage from the same modules
    h, means = x, []
    for i in range(2):
        h = m.norms[i].forward_blocks(m.linears[i](h), 4)
        h = m.neurons[i].scan(h, torch.zeros(2, h.shape[-1]), None)[0]
        means.append(h.mean())
    reg = m.regularization_loss()
    expected = w * (means[0] ** 2 + means[1] ** 2)  # the last layer is not regularised
    torch.testing.assert_close(reg, expected)
    assert reg.requires_grad and m.regularization_loss() is None  # consumed once
    rates = m.layer_activity
    assert set(rates) == {0, 1, 2} and rates[0] == pytest.approx(means[0].item())
    assert m.activity_rate == pytest.approx((6 * rates[0] + 5 * rates[1] + 3 * rates[2]) / 14)
    assert set(m.activity_metrics()) == {"spike_fraction_0", "spike_fraction_1", "spike_fraction_2"}
    m(x)
    assert regularization_loss(nn.Sequential(m)) is not None  # the model-wide helper
    with torch.no_grad():
        m(x)
        assert m.regularization_loss() is None  # nothing recorded without gradients
    reset_activity(nn.Sequential(m))
    assert m.activity_rate is None and m.layer_activity == {}


# ----------------------------------------------------------------------------- configs and cost
def test_snn_s4_small_cost_dense_and_event_driven() -> None:
    from emg2qwerty_ssm.models.card import compose_config

    cfg = compose_config(["model=snn_s4_small"])
    model = build_model(cfg.model)
    card = model_card(model)
    frontend_dense = 72 * 64 * 500 + 64 * 150 * 500
    tc_convs = 72 * 96 * 4 * 125 + 96 * 192 * 3 * 500 / 12 + 192 * 150 * 2 * 500 / 24
    tc_small_without_frontend = 13_581_375 - tc_convs  # the same encoder, backbone, classifier
    assert card["macs_per_second"] == pytest.approx(tc_small_without_frontend + frontend_dense)
    assert card["event_macs_per_second"] == card["macs_per_second"]  # no activity measured yet
    assert card["params"] == card["params_from_blocks"]
    model.eval()
    with torch.no_grad():
        model(torch.randn(96 * 10, 2, 2, 16))
    act = model.frontend.layer_activity[0]
    assert 0 < act < 1
    card = model_card(model)
    saving = 64 * 150 * 500 * (1 - act)
    assert card["event_macs_per_second"] == pytest.approx(card["macs_per_second"] - saving)
    assert activity_metrics(model) == {"frontend/spike_fraction_0": pytest.approx(act, rel=1e-6)}


def test_whole_snn_s4_small_streams_like_offline() -> None:
    from emg2qwerty_ssm.models.card import compose_config

    torch.manual_seed(8)
    model = build_model(compose_config(["model=snn_s4_small"]).model).eval()
    x = torch.randn(96 * 5 + 50, 2, 2, 16)
    with torch.no_grad():
        offline = model(x)
        state, outs = model.initial_state(2), []
        for piece in x.split(70):
            out, state = model.forward_stream(piece, state)
            outs.append(out)
    assert offline.shape[0] == 5
    torch.testing.assert_close(torch.cat(outs), offline, rtol=1e-5, atol=1e-5)


def test_autocast_runs_the_membrane_in_float32() -> None:
    m = SNNFrontend(4, layer_sizes=[6, 3], HLfreq_ratio=4, v_threshold=0.3)
    x = torch.randn(16, 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.float().sum().backward()
    assert torch.isfinite(m.linears[0].weight.grad).all() and m.layer_activity[0] > 0


def test_synapse_filtered_layers_are_counted_dense() -> None:
    m = SNNFrontend(4, layer_sizes=[6, 5], tau_synapse_filter=4.0)
    m(torch.randn(48, 2, 4))
    linears = [b for b in m.cost(500.0) if b.kind == "linear"]
    assert all(b.event_macs_per_s == b.weight_macs_per_s for b in linears)
    assert [b.kind for b in m.cost(500.0)].count("synapse") == 1


def test_configs_compose_with_other_front_ends_and_backbones() -> None:
    from emg2qwerty_ssm.models.card import compose_config

    plif = build_model(compose_config(["model=snn_s4_small", "model/frontend=snn_plif"]).model)
    assert plif.frontend.neurons[0].neuron == "plif" and plif.stride == 96
    tc = build_model(compose_config(["model=tc_s4_medium", "model/frontend=snn"]).model)
    assert isinstance(tc.frontend, SNNFrontend) and tc.frontend.in_features == 144
    for key, value in [
        ("alpha_surr_grad", 0),
        ("tau_mem", 1.0),
        ("v_reset", "hard"),
        ("tau_synapse_filter", 0.5),
        ("neuron", "alif"),
        ("layer_sizes", []),
    ]:
        with pytest.raises(ValueError, match=key):
            SNNFrontend(4, **{key: value})
    with pytest.raises(ValueError, match="reduction_mode"):
        build_model(
            compose_config(["model=snn_s4_small", "model.frontend.reduction_mode=max"]).model
        )


# ----------------------------------------------------------------------------- training
@pytest.mark.slow
def test_smoke_training_run_logs_spikes_and_measures_event_macs(tmp_path, tmp_path_factory) -> None:
    from trainer_helpers import cache_dir, compose_cfg

    from emg2qwerty_ssm.train import train

    overrides = [
        "debug=smoke",
        "model=snn_s4_small",
        "trainer.max_epochs=1",
        "evaluation.splits=[test]",
        "evaluation.protocols=[paper]",
        "model.frontend.sparsity_spiking_activity=0.5",
        "model.frontend.v_threshold=0.5",
    ]
    results = train(compose_cfg(overrides, tmp_path / "run", cache_dir(tmp_path_factory)))
    assert math.isfinite(results["CER"])
    cost = results["cost"]
    assert 0 < cost["event_macs_per_second"] < cost["macs_per_second"]
    with open(tmp_path / "run" / "csv" / "version_0" / "metrics.csv") as f:
        logged = {k for row in csv.DictReader(f) for k, v in row.items() if v}
    assert {"train/activity_loss", "train/frontend/spike_fraction_0"} <= logged
    assert "val/frontend/spike_fraction_0" in logged


def test_every_value_of_the_snn_search_space_builds_a_model() -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep

    from emg2qwerty_ssm import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", ["hparams_search=snn_s4_cer"], return_hydra_config=True)
    assert cfg.model.name == "snn_s4_small"
    params = cfg.hydra.sweeper.params
    assert any(k.startswith("model.frontend.") for k in params)
    parser = OverridesParser.create()
    for key, space in params.items():
        if not key.startswith("model."):
            continue
        sweep = parser.parse_override(f"{key}={space}").value()
        if isinstance(sweep, ChoiceSweep):
            values = [str(v).replace(" ", "") if v is not None else "null" for v in sweep.list]
        else:
            assert isinstance(sweep, IntervalSweep)
            values = [str(sweep.start), str(sweep.end)]
        for value in values:
            from emg2qwerty_ssm.models.card import compose_config

            model = build_model(compose_config(["model=snn_s4_small", f"{key}={value}"]).model)
            assert model.stride == 96, (key, value)


@pytest.mark.parametrize("preset", ["snn", "snn_plif"])
def test_front_end_family_presets_build_the_spiking_models(preset) -> None:
    from emg2qwerty_ssm.models.card import compose_config

    cfg = compose_config(["model=tc_s4_small", f"+sweep/frontend={preset}"])
    model = build_model(cfg.model)
    assert isinstance(model.frontend, SNNFrontend) and model.stride == 96
    assert model.frontend.neurons[0].neuron == ("plif" if preset == "snn_plif" else "lif")
    assert "event_macs_per_second" in model_card(model)
    family = (CONFIG_DIR / "sweep" / "frontend_family.yaml").read_text()
    line = next(x for x in family.splitlines() if "+sweep/frontend:" in x)
    assert preset in [v.strip() for v in line.split(":", 1)[1].split(",")]


@pytest.mark.slow
def test_snn_search_runs_end_to_end_and_records_event_macs(tmp_path, tmp_path_factory) -> None:
    import json
    import os
    import subprocess
    import sys

    from trainer_helpers import cache_dir

    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "emg2qwerty_ssm.train", "-m", "hparams_search=snn_s4_cer",
        "debug=smoke", "trainer.max_epochs=1", "model.backbone.n_layers=2",
        "model.backbone.d_model=16", "model.encoder.mlp_features=[4]",
        "model.frontend.v_reset=none",  # the string choice a sweep passes for a soft reset
        "evaluation.splits=[val]", "evaluation.protocols=[paper]", "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}", f"paths.cache_dir={cache_dir(tmp_path_factory)}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join([str(CONFIG_DIR.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for trial in ("trial_0", "trial_1"):
        results = json.loads((sweep / trial / "results.json").read_text())
        assert results["model"] == "snn_s4_small"
        assert results["config"]["model"]["frontend"]["v_reset"] == "none"
        cost = results["cost"]
        assert 0 < cost["event_macs_per_second"] <= cost["macs_per_second"]
    assert (sweep / "optuna_best.json").is_file()
