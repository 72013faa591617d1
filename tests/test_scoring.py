"""The one scoring path (emg2qwerty_ssm.scoring): emissions -> decode -> score."""

from __future__ import annotations

import pytest
import torch

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.decoding import CTCBeamDecoder, CTCGreedyDecoder
from emg2qwerty_ssm.decoding.base import BatchDecoder
from emg2qwerty_ssm.metrics import CharacterErrorRates
from emg2qwerty_ssm.scoring import (
    compute_cer,
    decode_and_score,
    decoder_name,
    evaluate_loader,
    target_label_data,
)


def _emissions_for(texts: list[str], frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (T, N, 99) whose greedy path spells each text (a blank between characters)."""
    cs = charset()
    emissions = torch.full((frames, len(texts), cs.num_classes), -20.0)
    emissions[:, :, cs.null_class] = 0.0
    lengths = []
    for n, text in enumerate(texts):
        labels = cs.str_to_labels(text)
        for k, label in enumerate(labels):
            emissions[2 * k, n, cs.null_class] = -20.0
            emissions[2 * k, n, label] = 0.0
        lengths.append(max(2 * len(labels), 1))
    return emissions, torch.tensor(lengths)


def _targets(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    cs = charset()
    labels = [cs.str_to_labels(t) for t in texts]
    width = max(len(x) for x in labels)
    padded = torch.full((width, len(texts)), cs.null_class, dtype=torch.long)
    for n, x in enumerate(labels):
        padded[: len(x), n] = torch.tensor(x)
    return padded, torch.tensor([len(x) for x in labels])


def test_decoders_are_batch_decoders() -> None:
    assert isinstance(CTCGreedyDecoder(), BatchDecoder)
    assert isinstance(CTCBeamDecoder(), BatchDecoder)
    assert not isinstance(object(), BatchDecoder)


def test_decode_and_score_texts_and_cer() -> None:
    emissions, lengths = _emissions_for(["hello", "abc"], frames=12)
    targets, target_lengths = _targets(["hello", "abd"])
    metric = CharacterErrorRates(sync_on_compute=False)
    pairs = decode_and_score(
        CTCGreedyDecoder(), metric, emissions, lengths, targets, target_lengths
    )
    assert pairs == [("hello", "hello"), ("abc", "abd")]
    cer = compute_cer(metric)
    assert cer is not None and cer["CER"] == pytest.approx(100 * 1 / 8)
    assert [t.text for t in target_label_data(targets, target_lengths)] == ["hello", "abd"]


def test_compute_cer_without_targets_is_none() -> None:
    assert compute_cer(CharacterErrorRates(sync_on_compute=False)) is None


def test_decoder_name() -> None:
    assert decoder_name(None) == "greedy"
    assert decoder_name({"_target_": "emg2qwerty_ssm.decoding.CTCBeamDecoder"}) == "beam"
    assert decoder_name({"_target_": "x.CTCBeamDecoder", "name": "beam_lm"}) == "beam_lm"


class _FixedModel(torch.nn.Module):
    """Returns stored emissions whatever the input (T, N, ...); stride 1."""

    def __init__(self, emissions: torch.Tensor) -> None:
        super().__init__()
        self.emissions = emissions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emissions[:, : x.shape[1]]

    def emission_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths


def test_evaluate_loader_scores_and_restores_the_mode() -> None:
    emissions, lengths = _emissions_for(["hello", "abc"], frames=12)
    targets, target_lengths = _targets(["hello", "abd"])
    batch = {
        "inputs": torch.zeros(12, 2, 4),
        "input_lengths": lengths,
        "targets": targets,
        "target_lengths": target_lengths,
    }
    model = _FixedModel(emissions).train()
    texts: list[tuple[str, str]] = []
    cer = evaluate_loader(model, [batch], CTCGreedyDecoder(), texts=texts)
    assert cer is not None and cer["CER"] == pytest.approx(12.5)
    assert texts == [("hello", "hello"), ("abc", "abd")]
    assert model.training
