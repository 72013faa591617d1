"""S4D layer: parameterisation (docs/models.md#s4d-parameterisation), FFT vs recurrent modes,
optimizer hints, dropout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emg2qwerty_ssm.models.s4d import S4D, TiedDropout


def _random_layer(h: int, seed: int, dtype: torch.dtype) -> S4D:
    """An S4D with randomised (not just initial) parameters, slow and fast modes mixed."""
    torch.manual_seed(seed)
    layer = S4D(h, d_state=32, dropout=0.1).to(dtype).eval()
    with torch.no_grad():
        layer.log_A_real.uniform_(-3.0, 1.0)  # Re(A) from -0.05 (long memory) to -2.7
        layer.A_imag.add_(torch.randn_like(layer.A_imag))
        layer.log_dt.uniform_(math.log(0.01), math.log(2.0))
        layer.out_conv.weight.normal_(0, 0.3)
    return layer


def _reference_ssm(layer: S4D, u: np.ndarray) -> np.ndarray:
    """Independent float64 recurrence from the raw parameters: s = Ā s + B̄ u, y = 2Re(C s) + D u."""
    p = {k: v.detach().double().numpy() for k, v in layer.named_parameters()}
    a = -np.exp(p["log_A_real"]) + 1j * p["A_imag"]  # (H, modes)
    a_bar = np.exp(np.exp(p["log_dt"])[:, None] * a)
    b_bar = (a_bar - 1) / a
    c = p["C"][..., 0] + 1j * p["C"][..., 1]
    s = np.zeros((u.shape[1],) + a.shape, dtype=complex)
    out = np.empty_like(u)
    for t in range(u.shape[0]):
        s = a_bar * s + b_bar * u[t][..., None]
        out[t] = 2 * np.einsum("hm,bhm->bh", c, s).real + p["D"] * u[t]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fft_step_and_chunked_modes_agree(dtype: torch.dtype, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, batch, length = int(rng.integers(3, 17)), int(rng.integers(1, 4)), int(rng.integers(50, 400))
    layer = _random_layer(h, seed, dtype)
    x = torch.randn(length, batch, h, dtype=dtype)
    with torch.no_grad():
        offline = layer(x)
        state, steps = layer.initial_state(batch, dtype=dtype), []
        for t in range(length):
            y, state = layer.step(x[t], state)
            steps.append(y)
        stepped = torch.stack(steps)
        cuts = sorted({0, length, *rng.integers(0, length, size=5).tolist()})
        state, chunks = layer.initial_state(batch, dtype=dtype), []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            y, state = layer.forward_stream(x[a:b], state)
            chunks.append(y)
        chunked = torch.cat(chunks)
        _, final = layer.forward_stream(x, layer.initial_state(batch, dtype=dtype))
    assert offline.shape == stepped.shape == chunked.shape == (length, batch, h)
    scale = max(1.0, offline.abs().max().item())  # float32 FFT error grows with magnitude
    assert (offline - stepped).abs().max().item() <= 1e-5 * scale
    assert (offline - chunked).abs().max().item() <= 1e-5 * scale
    # the final state of one chunk equals the state after all single steps
    assert (final - state).abs().max().item() <= 1e-5 * max(1.0, state.abs().max().item())


def test_fft_mode_matches_independent_float64_recurrence() -> None:
    layer = _random_layer(8, seed=5, dtype=torch.float64)
    u = torch.randn(300, 2, 8, dtype=torch.float64)
    with torch.no_grad():
        got = layer.ssm_conv(u).numpy()
    np.testing.assert_allclose(got, _reference_ssm(layer, u.numpy()), atol=1e-9)


def test_initialisation_and_parameter_count() -> None:
    torch.manual_seed(0)
    h = 24
    layer = S4D(h, d_state=32, dt_min=0.04, dt_max=4.0)
    assert layer.modes == 16
    assert layer.C.shape == (h, 16, 2)
    dt = layer.log_dt.exp()
    assert dt.min() >= 0.04 and dt.max() <= 4.0
    assert torch.allclose(layer.log_A_real, torch.full((h, 16), math.log(0.5)))
    assert torch.allclose(layer.A_imag[3], math.pi * torch.arange(16.0))
    assert torch.equal(layer.A_imag[0], layer.A_imag[-1])  # S4D-Lin: same for every channel
    assert all(p.requires_grad for p in layer.parameters())
    # docs/models.md#parameter-counts
    assert sum(p.numel() for p in layer.parameters()) == 2 * h * h + 68 * h


def test_optim_hints_only_on_timescale_parameters() -> None:
    layer = S4D(8, ssm_lr=5e-4)
    hinted = {n for n, p in layer.named_parameters() if hasattr(p, "_optim")}
    assert hinted == {"log_dt", "log_A_real", "A_imag"}
    assert layer.log_dt._optim == {"lr": 5e-4, "weight_decay": 0.0}
    assert set(layer.optim_hints()) == hinted


def test_gradients_flow_in_fft_mode() -> None:
    layer = _random_layer(4, seed=3, dtype=torch.float32).train()
    layer(torch.randn(64, 2, 4)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_tied_dropout_shares_mask_over_time() -> None:
    torch.manual_seed(0)
    drop = TiedDropout(0.5).train()
    y = drop(torch.ones(30, 4, 16))
    zero = y == 0
    assert zero.any() and (~zero).any()
    assert torch.equal(zero, zero[:1].expand_as(zero))  # same channels dropped at every step
    assert torch.allclose(y[~zero], torch.full_like(y[~zero], 2.0))
    x = torch.randn(5, 2, 3)
    assert torch.equal(drop.eval()(x), x)
    with pytest.raises(ValueError, match="dropout"):
        TiedDropout(1.0)


def test_odd_state_size_is_refused() -> None:
    with pytest.raises(ValueError, match="d_state"):
        S4D(4, d_state=7)
