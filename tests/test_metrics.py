"""CharacterErrorRates: docs/decoding-rules.md#cer worked examples, micro-averaging, empty
epochs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from emg2qwerty_ssm.data import LabelData
from emg2qwerty_ssm.decoding import CTCGreedyDecoder
from emg2qwerty_ssm.metrics import CharacterErrorRates


def test_worked_example_is_a_micro_average():
    metric = CharacterErrorRates()
    metric.update(LabelData.from_str("helo wrld"), LabelData.from_str("hello world"))
    metric.update(LabelData.from_str("hello"), LabelData.from_str("helo"))
    rates = metric.compute()
    # 3 errors / 15 target characters; the mean of per-item rates would be 21.6 %.
    assert rates["CER"] == pytest.approx(20.0)
    assert rates["IER"] == pytest.approx(100 * 2 / 15)
    assert rates["DER"] == pytest.approx(100 * 1 / 15)
    assert rates["SER"] == 0.0


def test_operation_types_follow_rapidfuzz_editops():
    metric = CharacterErrorRates()
    metric.update(LabelData.from_str("⇧Helo⌫"), LabelData.from_str("⇧Hello"))
    rates = metric.compute()
    assert rates["IER"] == pytest.approx(100 / 6)
    assert rates["DER"] == pytest.approx(100 / 6)
    assert rates["CER"] == pytest.approx(200 / 6)
    metric.reset()
    metric.update("abc", "abd")
    expected = {"CER": 100 / 3, "missing": 0.0, "extra": 0.0, "substituted": 100 / 3}
    assert metric.compute() == {**expected, "IER": 0.0, "DER": 0.0, "SER": 100 / 3}


def test_empty_epoch_gives_nan_not_a_division_error():
    metric = CharacterErrorRates()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert all(math.isnan(v) for v in metric.compute().values())
    metric.update("abc", "")  # predictions without any target characters
    assert all(math.isnan(v) for v in metric.compute().values())
    metric.update("", "xy")
    assert metric.compute()["CER"] == pytest.approx(100 * 5 / 2)


@pytest.mark.filterwarnings("ignore:The ..compute.. method")  # merge_state skips update()
def test_states_sum_across_processes_and_reset():
    a, b = CharacterErrorRates(), CharacterErrorRates()
    a.update("kitten", "sitting")
    b.update("flaw", "lawn")
    merged = CharacterErrorRates()
    merged.merge_state(a)  # the states sum, as under DDP's reduction
    merged.merge_state(b)
    assert merged.compute()["CER"] == pytest.approx(100 * (3 + 2) / 11)
    assert isinstance(merged.target_length, torch.Tensor)
    merged.reset()
    merged.update("", "")
    assert math.isnan(merged.compute()["CER"])


def test_rejects_non_text_inputs():
    with pytest.raises(TypeError, match="prediction"):
        CharacterErrorRates().update([1, 2], "ab")


def test_greedy_decodings_of_reference_cases(reference_dir):
    folder = reference_dir / "decoding"
    cases = json.loads((folder / "decoder_cases.json").read_text())
    arrays = np.load(folder / "decoder_cases.npz")
    metric = CharacterErrorRates()
    decoder = CTCGreedyDecoder()
    batch_errors = 0
    for case in cases:
        emissions = arrays[f"emissions_{case['case']}"]
        target = LabelData.from_labels(arrays[f"target_labels_{case['case']}"].tolist())
        decoder.reset()
        predicted = decoder.decode(emissions, np.arange(len(emissions)))
        assert predicted.text == case["greedy"]["text"]
        metric.update(predicted, target)
        single = CharacterErrorRates()
        single.update(predicted, target)
        batch_errors += single.compute()["CER"] * len(target) / 100
    total = sum(len(arrays[f"target_labels_{c['case']}"]) for c in cases)
    assert metric.compute()["CER"] == pytest.approx(100 * batch_errors / total)
    assert 0 < metric.compute()["CER"] < 100
