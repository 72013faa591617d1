"""Transforms (docs/format.md#transforms): shapes, randomness and the spectrogram's values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from emg2qwerty_ssm.transforms import (
    Compose,
    ForEach,
    Lambda,
    LogSpectrogram,
    RandomBandRotation,
    SpecAugment,
    TemporalAlignmentJitter,
    ToTensor,
)


def _rows(n: int) -> np.ndarray:
    dtype = [("emg_left", "<f4", (16,)), ("emg_right", "<f4", (16,)), ("time", "<f8")]
    rows = np.zeros(n, dtype=dtype)
    rows["emg_left"] = np.arange(n * 16).reshape(n, 16)
    rows["emg_right"] = -np.arange(n * 16).reshape(n, 16)
    return rows


def test_to_tensor_stacks_bands():
    rows = _rows(5)
    x = ToTensor()(rows)
    assert x.shape == (5, 2, 16) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(rows["emg_left"]))
    assert torch.equal(x[:, 1], torch.from_numpy(rows["emg_right"]))


def test_band_rotation_is_independent_per_band():
    x = torch.arange(16.0).repeat(50, 2, 1)  # (T, 2, 16), each band 0..15
    assert torch.equal(RandomBandRotation(offsets=(2,))(x)[0, 0], torch.arange(16.0).roll(2))
    per_band = ForEach(RandomBandRotation(), batch_dim=1)
    np.random.seed(0)
    seen = set()
    for _ in range(30):
        y = per_band(x)
        # rolling 0..15 by k puts (-k) mod 16 at electrode 0
        offsets = tuple(((-int(y[0, b, 0]) + 8) % 16) - 8 for b in range(2))
        for b, k in enumerate(offsets):
            assert k in (-1, 0, 1)
            assert torch.equal(y[:, b], x[:, b].roll(k, dims=-1))
        seen.add(offsets)
    assert any(a != b for a, b in seen)  # the two bands drew different offsets


def test_temporal_alignment_jitter():
    x = torch.arange(1000.0)[:, None, None].expand(1000, 2, 16).contiguous()
    jitter = TemporalAlignmentJitter(max_offset=120)
    np.random.seed(1)
    offsets = set()
    for _ in range(40):
        y = jitter(x)
        o = int(y[0, 0, 0] - y[0, 1, 0])  # left starts o samples later than right
        offsets.add(o)
        assert y.shape == (1000 - abs(o), 2, 16) and abs(o) <= 120
        assert torch.all(y[:, 0, 0] - y[:, 1, 0] == o)  # a constant shift between bands
    assert min(offsets) < 0 < max(offsets)
    assert torch.equal(TemporalAlignmentJitter(max_offset=0)(x), x)
    with pytest.raises(ValueError, match="2 bands"):
        jitter(torch.zeros(10, 3, 16))
    with pytest.raises(ValueError):
        TemporalAlignmentJitter(max_offset=-1)


@pytest.mark.parametrize("T", [64, 65, 79, 80, 8000, 10000])
def test_log_spectrogram_shape(T):
    y = LogSpectrogram()(torch.randn(T, 2, 16))
    assert y.shape == ((T - 64) // 16 + 1, 2, 16, 33)


def test_log_spectrogram_values_match_numpy():
    fs, f0, T = 2000.0, 250.0, 400
    t = np.arange(T) / fs
    sine = np.sin(2 * np.pi * f0 * t).astype(np.float32)
    x = torch.zeros(T, 2, 16)
    x[:, 1, 3] = torch.from_numpy(sine)
    y = LogSpectrogram()(x)

    n = np.arange(64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 64)  # periodic Hann
    frames = np.stack([sine[i : i + 64] for i in range(0, T - 64 + 1, 16)]).astype(np.float64)
    spec = np.fft.rfft(frames * window, axis=1) / np.sqrt((window**2).sum())
    expected = np.log10(np.abs(spec) ** 2 + 1e-6)
    np.testing.assert_allclose(y[:, 1, 3].numpy(), expected, atol=1e-4)
    assert int(y[0, 1, 3].argmax()) == round(f0 / (fs / 64))  # 250 Hz is bin 8
    assert torch.allclose(y[:, 0, 0], torch.full_like(y[:, 0, 0], -6.0))  # silence: log10(1e-6)
    with pytest.raises(ValueError, match="n_fft"):
        LogSpectrogram()(torch.zeros(10, 2, 16))


def _zero_cells(y: torch.Tensor) -> torch.Tensor:
    return y == 0


def test_spec_augment_masks():
    spec = torch.rand(200, 2, 16, 33) + 1.0  # nothing is 0 before masking
    assert torch.equal(SpecAugment()(spec), spec)  # no masks by default

    time_only = SpecAugment(n_time_masks=3, time_mask_param=25)
    np.random.seed(0)
    torch.manual_seed(0)
    patterns = set()
    for _ in range(10):
        y = time_only(spec)
        assert y.shape == spec.shape
        zero = _zero_cells(y)
        assert torch.equal(y[~zero], spec[~zero])
        for b in range(2):
            for c in range(16):
                cells = zero[:, b, c]  # (T', F): a time mask zeroes whole frames
                frames = cells.any(dim=1)
                assert torch.equal(cells, frames[:, None].expand_as(cells))
                assert int(frames.sum()) <= 3 * 25
                patterns.add(tuple(frames.nonzero().flatten().tolist()))
    assert len(patterns) > 10  # iid: different bands/channels get different masks

    freq_only = SpecAugment(n_freq_masks=2, freq_mask_param=4, mask_value=-1.0)
    masked_bins = 0
    for _ in range(10):
        y = freq_only(spec)
        cells = y == -1.0
        for b in range(2):
            for c in range(16):
                bins = cells[:, b, c].any(dim=0)  # (F,): a freq mask spans all frames
                assert torch.equal(cells[:, b, c], bins[None].expand_as(cells[:, b, c]))
                assert int(bins.sum()) <= 2 * 4
                masked_bins += int(bins.sum())
    assert masked_bins > 0

    shared = SpecAugment(n_time_masks=3, time_mask_param=25, iid_time_masks=False)
    y = shared(spec)
    zero = _zero_cells(y)
    assert torch.equal(zero, zero[:, :1, :1].expand_as(zero))  # one mask for all channels


@pytest.mark.parametrize("convert", ["none", "all"])
def test_compose_lambda_and_hydra_instantiation(convert):
    pipeline = instantiate(
        {
            "_target_": "emg2qwerty_ssm.transforms.Compose",
            "transforms": [
                {"_target_": "emg2qwerty_ssm.transforms.ToTensor"},
                {
                    "_target_": "emg2qwerty_ssm.transforms.ForEach",
                    "transform": {
                        "_target_": "emg2qwerty_ssm.transforms.RandomBandRotation",
                        "offsets": [0],
                    },
                    "batch_dim": 1,
                },
                {"_target_": "emg2qwerty_ssm.transforms.LogSpectrogram"},
                {
                    "_target_": "emg2qwerty_ssm.transforms.SpecAugment",
                    "n_time_masks": 3,
                    "time_mask_param": 25,
                    "n_freq_masks": 2,
                    "freq_mask_param": 4,
                },
            ],
        },
        _convert_=convert,
    )
    assert isinstance(pipeline.transforms[1].transform, RandomBandRotation)
    assert pipeline(_rows(8000)).shape == (497, 2, 16, 33)
    order = Compose([Lambda(lambda v: v + 1), Lambda(lambda v: v * 10)])
    assert order(1) == 20
