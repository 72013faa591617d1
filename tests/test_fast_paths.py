"""Every fast path equals today's reference maths (``s4d_reference``) within 1e-5 in float32.

Fast paths: the eval tables (cached discretisation), the chunk matrix, the chunked scan, the
elementwise step, the blocked kernel (training FFT), the folded TC front-end; checked on random
S4D layers and on the three paper models, streamed in chunks that do and do not divide the
stride. Also: the tables follow parameter changes, and the FFT stays float32 under bf16 autocast.
"""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import paper_model as build_paper_model

from emg2qwerty_ssm.models import EMGModel, build_model
from emg2qwerty_ssm.models import s4d as s4d_module
from emg2qwerty_ssm.models import s4d_reference as ref
from emg2qwerty_ssm.models.s4d import S4D
from emg2qwerty_ssm.models.summary import compose_model_config

ATOL = 1e-5


def _random_layer(h: int, seed: int) -> S4D:
    torch.manual_seed(seed)
    layer = S4D(h, d_state=32).eval()
    with torch.no_grad():
        layer.log_A_real.uniform_(-3.0, 1.0)
        layer.A_imag.add_(torch.randn_like(layer.A_imag))
        layer.log_dt.uniform_(math.log(0.01), math.log(2.0))
    return layer


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to max(1, |b|) (float32 error grows with magnitude)."""
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


@pytest.mark.parametrize("length", [1, 2, 7, 64, 65, 128, 300, 1001])
def test_offline_fast_equals_reference(length: int) -> None:
    layer = _random_layer(12, seed=length)
    u = torch.randn(length, 3, 12)
    with torch.no_grad():
        expected = ref.ssm_conv(layer, u)
        assert _close(layer.ssm_conv(u), expected) <= ATOL
        assert _close(layer(u), _head_reference(layer, expected)) <= ATOL


def _head_reference(layer: S4D, y: torch.Tensor) -> torch.Tensor:
    with ref.reference_mode():
        return layer._head(y)


@pytest.mark.parametrize("batch", [1, 2])
def test_chunks_and_steps_equal_reference_and_carry_state(batch: int) -> None:
    layer = _random_layer(10, seed=7)
    u = torch.randn(400, batch, 10)
    cuts = [0, 1, 2, 5, 69, 70, 200, 263, 400]  # 1-step, short, > one matrix, > one block
    with torch.no_grad():
        expected = ref.ssm_conv(layer, u)
        state = layer.initial_state(batch)
        ref_state = layer.initial_state(batch)
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            y, state = layer.ssm_chunk(u[a:b], state)
            _, ref_state = ref.ssm_chunk(layer, u[a:b], ref_state)
            outs.append(y)
            assert _close(state, ref_state) <= ATOL
        assert _close(torch.cat(outs), expected) <= ATOL
        state, steps = layer.initial_state(batch), []
        for t in range(50):
            y, state = layer.ssm_step(u[t], state)
            steps.append(y)
        assert _close(torch.stack(steps), expected[:50]) <= ATOL


def test_scan_blocks_of_every_size_agree() -> None:
    layer = _random_layer(6, seed=3)
    u = torch.randn(777, 1, 6)
    with torch.no_grad():
        expected = ref.ssm_conv(layer, u)
        for block in (16, 64, 128, 256):
            old = s4d_module.SCAN_BLOCK
            s4d_module.SCAN_BLOCK = block
            try:
                assert _close(layer.ssm_conv(u), expected) <= ATOL, block
            finally:
                s4d_module.SCAN_BLOCK = old


@pytest.mark.parametrize("length", [1, 10, 99, 1000, 4099])
def test_blocked_kernel_and_its_gradient_equal_reference(length: int) -> None:
    layer = _random_layer(5, seed=length).train()
    fast = layer.kernel(length)
    slow = ref.kernel(layer, length)
    assert _close(fast, slow) <= ATOL
    weights = torch.randn(5, length)
    g_fast = torch.autograd.grad((fast * weights).sum(), list(layer.parameters())[:4])
    g_slow = torch.autograd.grad((slow * weights).sum(), list(layer.parameters())[:4])
    for a, b in zip(g_fast, g_slow, strict=True):
        assert _close(a, b) <= 1e-4  # gradients sum L terms: a looser float32 bound


def test_tables_follow_parameter_changes() -> None:
    layer = _random_layer(4, seed=1)
    u = torch.randn(30, 1, 4)
    with torch.no_grad():
        before = layer.ssm_conv(u)
        tables = layer.tables()
        layer.log_dt.add_(0.3)  # an optimizer step is an in-place update like this
        after = layer.ssm_conv(u)
        assert layer.tables() is not tables
        assert (after - before).abs().max().item() > 1e-3
        assert _close(after, ref.ssm_conv(layer, u)) <= ATOL
        other = _random_layer(4, seed=2)
        layer.load_state_dict(other.state_dict())
        assert _close(layer.ssm_conv(u), ref.ssm_conv(other, u)) <= ATOL
    layer.train()
    assert layer._tables is None


def test_fft_runs_in_float32_under_bf16_autocast() -> None:
    layer = _random_layer(8, seed=4).train()
    x = torch.randn(200, 2, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ssm = layer.ssm_conv(x.to(torch.bfloat16))  # a bf16 activation, as after a Linear
        out = layer(x)
    assert y_ssm.dtype == torch.float32
    expected = ref.ssm_conv(layer, x.to(torch.bfloat16).float())
    assert _close(y_ssm, expected) <= ATOL
    out.float().square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert layer.log_dt.grad is not None and torch.isfinite(layer.log_dt.grad).all()


PAPER = ("s4_large", "tc_s4_medium", "tc_s4_small")


@pytest.fixture(scope="module", params=PAPER)
def paper_model(request: pytest.FixtureRequest) -> EMGModel:
    return build_paper_model(request.param, affine=True, timescales=True)


def _stream(model: EMGModel, x: torch.Tensor, chunk: int) -> torch.Tensor:
    state, outs = model.initial_state(x.shape[1]), []
    for a in range(0, x.shape[0], chunk):
        out, state = model.forward_stream(x[a : a + chunk], state)
        outs.append(out)
    return torch.cat(outs)


def test_paper_models_fast_offline_and_streams_equal_reference(paper_model: EMGModel) -> None:
    r = paper_model.stride
    x = torch.randn(12 * r + r // 2, 1, 2, 16)
    with torch.no_grad():
        with ref.reference_mode():
            expected = paper_model(x)
            ref_streamed = _stream(paper_model, x, 2 * r + 7)
        assert _close(ref_streamed, expected) <= ATOL  # the reference itself streams exactly
        assert _close(paper_model(x), expected) <= ATOL
        for engine in ("fused", "torch"):  # the NumPy whole-model step and stage by stage
            paper_model.stream_engine = engine
            try:
                state_type = type(paper_model.initial_state(1)).__name__
                assert state_type == ("FusedState" if engine == "fused" else "list")
                for chunk in (r, r // 2, 2 * r, 37, r + 5, 1000):  # dividing the stride or not
                    got = _stream(paper_model, x, chunk)
                    assert _close(got, expected) <= ATOL, (engine, chunk)
            finally:
                paper_model.stream_engine = "fused"


def test_fused_engine_follows_weights_and_states_branch() -> None:
    torch.manual_seed(0)
    model = build_model(compose_model_config(["model=tc_s4_small"])).eval()
    other = build_model(compose_model_config(["model=tc_s4_small"])).eval()
    r = model.stride
    x = torch.randn(6 * r, 1, 2, 16)
    with torch.no_grad():
        _, state = model.forward_stream(x[: 3 * r], model.initial_state(1))
        first, _ = model.forward_stream(x[3 * r :], state)
        again, _ = model.forward_stream(x[3 * r :], state)  # the same state used twice
        assert torch.equal(first, again)
        model.load_state_dict(other.state_dict())  # new weights: the plan must be rebuilt
        streamed = _stream(model, x, 50)
        with ref.reference_mode():
            expected = other(x)
    assert _close(streamed, expected) <= ATOL
    model.train()
    assert type(model.initial_state(1)).__name__ == "list"  # training streams stage by stage
    with pytest.raises(ValueError, match="encoder expects input"):
        model.eval().forward_stream(torch.randn(10, 1, 3, 16), model.initial_state(1))


def test_eval_fast_paths_stay_float32_under_bf16_autocast() -> None:
    layer = _random_layer(8, seed=6)
    u = torch.randn(150, 1, 8)
    with torch.no_grad():
        expected = ref.ssm_conv(layer, u)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            offline = layer.ssm_conv(u)
            head, state = layer.ssm_chunk(u[:100], layer.initial_state(1))
            step, _ = layer.ssm_step(u[100], state)
    assert offline.dtype == torch.float32
    assert _close(offline, expected) <= ATOL
    assert _close(torch.cat([head, step.unsqueeze(0)]), expected[:101]) <= ATOL


def test_tc_frontend_training_path_equals_conv_stack() -> None:
    """Training forward, gradients and BatchNorm running statistics equal the Conv1d stack."""
    import copy

    from emg2qwerty_ssm.models.frontends import TemporalConvFrontend

    torch.manual_seed(0)
    fast = TemporalConvFrontend(24, out_channels=(16, 32, 20), strides=(4, 3, 2)).train()
    slow = copy.deepcopy(fast)
    x = torch.randn(24 * 7 + 5, 3, 24)
    y_fast = fast(x)
    with ref.reference_mode():
        y_slow = slow(x)
    assert _close(y_fast, y_slow) <= ATOL
    weights = torch.randn_like(y_fast)
    (y_fast * weights).sum().backward()
    (y_slow * weights).sum().backward()
    for (name, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        assert _close(a.grad, b.grad) <= 1e-4, name
    for a, b in zip(fast.buffers(), slow.buffers(), strict=True):
        assert _close(a.float(), b.float()) <= ATOL
