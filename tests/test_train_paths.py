"""The training fast paths equal today's reference maths (``s4d_reference``), gradients included.

Covered: the causal FFT convolution with its hand-written backward and even 5-smooth FFT length
(``s4d_train.causal_conv``), the S4D kernel with its hand-written backward computed for several
layers at once (``S4D.training_kernels``), the TC front-end's frame stacking, and a whole
training forward + backward of the three paper models (dropout on, same masks) against
``reference_mode()``: outputs, every parameter's gradient and the BatchNorm statistics.
"""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import paper_model

from emg2qwerty_ssm.models import s4d_reference as ref
from emg2qwerty_ssm.models import s4d_train
from emg2qwerty_ssm.models.frontends import stack_frames
from emg2qwerty_ssm.models.s4d import S4D
from emg2qwerty_ssm.models.s4d_train import causal_conv, fft_len, stacked_kernels


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max abs difference relative to max(1, |b|)."""
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def _reference_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Today's FFT convolution (size 2L, autograd's backward), without the D skip."""
    length = u.shape[0]
    u_f = torch.fft.rfft(u.permute(1, 2, 0), n=2 * length)
    y = torch.fft.irfft(u_f * torch.fft.rfft(k, n=2 * length), n=2 * length)[..., :length]
    return y.permute(2, 0, 1)


def test_fft_len_is_the_smallest_even_5_smooth_length() -> None:
    def fast(n: int) -> bool:
        rest = n
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        return rest == 1 and n % 2 == 0

    for m in range(1, 2000):
        n = fft_len(m)
        assert n >= m and fast(n) and not any(fast(j) for j in range(m, n)), m
    assert fft_len(2 * 104 - 1) == 216 and fft_len(2 * 345 - 1) == 720
    # S4_large's odd lengths before: 675 (L = 325 frames) and 16,875 (L = 8,300)
    assert fft_len(2 * 325 - 1) == 720 and fft_len(2 * 8300 - 1) == 17280


@pytest.mark.parametrize("by_transpose", [False, True], ids=["permute", "transpose2d"])
@pytest.mark.parametrize("length", [1, 2, 7, 54, 104, 325, 345, 1000])
def test_causal_conv_and_its_gradients_equal_reference(
    length: int, by_transpose: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # both ways of laying out the FFTs' rows (large tensors take the 2-D transposes)
    monkeypatch.setattr(s4d_train, "LARGE_CONV_NUMEL", 0 if by_transpose else 1 << 60)
    torch.manual_seed(length)
    u = torch.randn(length, 3, 5, requires_grad=True)
    k = torch.randn(5, length, requires_grad=True)
    weights = torch.randn(length, 3, 5)
    fast = causal_conv(u, k)
    slow = _reference_conv(u, k)
    assert fast.is_contiguous() and fast.shape == u.shape
    assert _close(fast, slow) <= 1e-5
    g_fast = torch.autograd.grad((fast * weights).sum(), [u, k])
    g_slow = torch.autograd.grad((slow * weights).sum(), [u, k])
    for a, b in zip(g_fast, g_slow, strict=True):
        assert a.shape == b.shape and _close(a, b) <= 1e-5
    # an independent check: the direct sum in float64
    u64, k64 = u.detach().double(), k.detach().double()
    direct = torch.zeros_like(u64)
    for j in range(length):
        direct[j:] += k64[:, j] * u64[: length - j]
    assert _close(fast.double(), direct) <= 1e-5


def test_causal_conv_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="causal_conv"):
        causal_conv(torch.randn(10, 2, 4), torch.randn(4, 9))


def _random_layers(n: int, h: int, seed: int) -> list[S4D]:
    torch.manual_seed(seed)
    layers = [S4D(h, d_state=32).train() for _ in range(n)]
    with torch.no_grad():
        for layer in layers:
            layer.log_A_real.uniform_(-3.0, 1.0)
            layer.A_imag.add_(torch.randn_like(layer.A_imag))
            layer.log_dt.uniform_(math.log(0.01), math.log(2.0))
    return layers


@pytest.mark.parametrize("length", [1, 54, 104, 1000])
def test_kernels_of_several_layers_at_once_equal_reference(length: int) -> None:
    layers = _random_layers(3, 6, seed=length)
    params = [(lay.log_dt, lay.log_A_real, lay.A_imag, lay.C) for lay in layers]
    together = stacked_kernels(params, length)
    weights = [torch.randn(6, length) for _ in layers]
    flat = [p for group in params for p in group]

    def loss(kernels: list[torch.Tensor]) -> torch.Tensor:
        return sum((k * w).sum() for k, w in zip(kernels, weights, strict=True))  # type: ignore[return-value]

    g_fast = torch.autograd.grad(loss(together), flat)
    slow = [ref.kernel(lay, length) for lay in layers]
    g_slow = torch.autograd.grad(loss(slow), flat)
    for a, b in zip(together, slow, strict=True):
        assert _close(a, b) <= 1e-5
    for a, b in zip(g_fast, g_slow, strict=True):
        assert _close(a, b) <= 1e-4  # gradients sum L terms: a looser float32 bound


def test_training_kernels_group_by_length_and_skip_other_paths() -> None:
    layers = _random_layers(4, 6, seed=1)
    kernels = S4D.training_kernels(layers, [40, 20, 40, 0])
    assert [None if k is None else tuple(k.shape) for k in kernels] == [
        (6, 40),
        (6, 20),
        (6, 40),
        None,
    ]
    for layer, length, k in zip(layers[:3], [40, 20, 40], kernels, strict=False):
        assert _close(k, ref.kernel(layer, length)) <= 1e-5
    with torch.no_grad():  # eval tables, not the FFT path: no kernel
        assert S4D.training_kernels(layers, [40] * 4) == [None] * 4
    with ref.reference_mode():
        assert S4D.training_kernels(layers, [40] * 4) == [None] * 4


def test_stack_frames_and_its_gradient() -> None:
    torch.manual_seed(0)
    x = torch.randn(23, 2, 5, requires_grad=True)
    y = stack_frames(x, 3, 21)  # the last 2 frames are left out
    expected = x[:21].reshape(7, 3, 2, 5).permute(0, 2, 1, 3).reshape(7, 2, 15)
    assert torch.equal(y, expected)
    weights = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * weights).sum(), [x])
    (grad_ref,) = torch.autograd.grad((expected * weights).sum(), [x])
    assert torch.equal(grad, grad_ref) and not grad[21:].any()
    with pytest.raises(ValueError, match="multiple"):
        stack_frames(x, 3, 20)


@pytest.mark.parametrize("name", ["tc_s4_small", "tc_s4_medium", "s4_large"])
def test_paper_models_training_step_equals_reference(name: str) -> None:
    """Training mode, dropout on: the fast and the reference forward + backward draw the same
    dropout masks from the same seed and agree on outputs, gradients and BatchNorm stats."""
    fast = paper_model(name, affine=True, timescales=True).train()
    slow = paper_model(name, affine=True, timescales=True).train()
    r = fast.stride
    x = torch.randn(10 * r + r // 2, 2, 2, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    y_fast = fast(x)
    torch.manual_seed(5)
    with ref.reference_mode():
        y_slow = slow(x)
    assert _close(y_fast, y_slow) <= 1e-5
    weights = torch.randn_like(y_fast)
    (y_fast * weights).sum().backward()
    (y_slow * weights).sum().backward()
    for (pname, a), b in zip(fast.named_parameters(), slow.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, pname
        assert _close(a.grad, b.grad) <= 1e-4, pname
    for a, b in zip(fast.buffers(), slow.buffers(), strict=True):
        assert _close(a.float(), b.float()) <= 1e-5
