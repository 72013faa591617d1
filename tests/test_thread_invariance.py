"""S4_large trains to the same floats at one and at two CPU threads, so `make pareto` may hand
it a finished stream's core mid-run (emg2qwerty_ssm/elastic_threads.py): Adam steps with the
thread count changed between them give bit-identical weights, optimizer state and outputs.
Also the LayerNorm that makes this so, on its own."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
import torch.nn.functional as F
from model_helpers import paper_model

from emg2qwerty_ssm.models.norms import ThreadInvariantLayerNorm


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _train(threads_per_step: Sequence[int], batch: int = 4, samples: int = 5200):
    """S4_large from seed 0 after one Adam step per entry of ``threads_per_step`` (each step
    run at that many threads, dropout on) on fixed random data; its state and eval output."""
    model = paper_model("s4_large").train()
    opt = torch.optim.Adam(model.param_groups(1e-3), foreach=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(samples, batch, 2, 16, generator=gen)
    emissions = model.emission_lengths(torch.full((batch,), samples))
    target_len = int(emissions.min()) // 4
    targets = torch.randint(1, 99, (batch, target_len), generator=gen)
    torch.manual_seed(5)  # the dropout masks
    for threads in threads_per_step:
        torch.set_num_threads(threads)
        opt.zero_grad(set_to_none=True)
        loss = F.ctc_loss(model(x), targets, emissions, torch.full((batch,), target_len), blank=0)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x[:, :2])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [t.clone() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    return state, moments, out


def test_s4_large_steps_give_the_same_floats_at_one_and_two_threads(restore_threads) -> None:
    state_1, moments_1, out_1 = _train([1, 1, 1])
    state_2, moments_2, out_2 = _train([1, 2, 2])  # the handover after the first step
    assert state_1.keys() == state_2.keys()
    changed = [k for k in state_1 if not torch.equal(state_1[k], state_2[k])]
    assert not changed, f"weights differ at two threads: {changed}"
    assert len(moments_1) == len(moments_2) > 0
    assert all(torch.equal(a, b) for a, b in zip(moments_1, moments_2, strict=True))
    assert torch.equal(out_1, out_2)
    # the LayerNorms trained (their gradients are the ones that differed before)
    initial = paper_model("s4_large").state_dict()["backbone.norms.0.weight"]
    assert not torch.equal(state_1["backbone.norms.0.weight"], initial)


def test_layernorm_gradients_do_not_depend_on_the_thread_count(restore_threads) -> None:
    torch.manual_seed(0)
    norm = ThreadInvariantLayerNorm(256)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(10400, 256)
    grad = torch.randn(10400, 256)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        xi = x.clone().requires_grad_(True)
        norm.zero_grad(set_to_none=True)
        out = norm(xi)
        out.backward(grad)
        results.append((out.detach(), xi.grad, norm.weight.grad.clone(), norm.bias.grad.clone()))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    # and it is nn.LayerNorm's maths: the float64 module's gradients, up to float32 rounding
    # (sums over 10,400 rows: ~1e-3 absolute)
    plain = torch.nn.LayerNorm(256).double()
    plain.load_state_dict(norm.state_dict())
    xi = x.double().requires_grad_(True)
    plain(xi).backward(grad.double())
    exact = (xi.grad, plain.weight.grad, plain.bias.grad)
    for want, ours in zip(exact, results[0][1:], strict=True):
        torch.testing.assert_close(ours, want.float(), atol=3e-3, rtol=1e-4)
