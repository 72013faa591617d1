"""Unclear today, now named: NaN emissions (the session), bad config values (the key),
probabilities given to the beam decoder, random bytes as a language model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _emg_files import GOOD_DTYPE, T0, write_session
from torch.utils.data import ConcatDataset, DataLoader
from trainer_helpers import compose_cfg

from emg2qwerty_ssm.config_checks import ConfigValueError
from emg2qwerty_ssm.data import WindowedEMGDataset
from emg2qwerty_ssm.decoding.beam import CTCBeamDecoder
from emg2qwerty_ssm.decoding.greedy import CTCGreedyDecoder
from emg2qwerty_ssm.decoding.lm import CharLM, LMError
from emg2qwerty_ssm.scoring import evaluate_loader
from emg2qwerty_ssm.train import train


class MeanModel(torch.nn.Module):
    """Uniform log-probabilities (T, N, 99), NaN wherever the input window holds NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        poison = x.flatten(2).mean(dim=2, keepdim=True) * 0  # (T, N, 1): NaN propagates
        return torch.log_softmax(torch.zeros(x.shape[0], x.shape[1], 99), dim=2) + poison

    def emission_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths.long()


def test_nan_emissions_at_evaluation_name_the_session(tmp_path):
    rows = np.zeros(2000, dtype=GOOD_DTYPE)
    rows["time"] = T0 + np.arange(2000) / 2000.0
    good = write_session(tmp_path / "good.hdf5", rows=rows.copy())
    rows["emg_right"][1500, 3] = np.nan
    bad = write_session(tmp_path / "bad.hdf5", rows=rows)
    data = ConcatDataset([WindowedEMGDataset(p, window_length=1000) for p in (good, bad)])
    loader = DataLoader(data, batch_size=3, collate_fn=WindowedEMGDataset.collate)
    with pytest.raises(ValueError, match=rf"NaN/Inf emissions for session {bad} \(window 1\)"):
        evaluate_loader(MeanModel(), loader, CTCGreedyDecoder())


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("evaluation.batch_size=0", "evaluation.batch_size=0: expected a positive integer"),
        (
            "datamodule.train_on_longer.batch_size=-2",
            "datamodule.train_on_longer.batch_size=-2: expected a positive integer",
        ),
        ("optimizer.lr=fast", "optimizer.lr='fast': expected a finite number"),
    ],
)
def test_bad_config_values_are_named_before_anything_runs(tmp_path, override, named):
    cfg = compose_cfg(["debug=smoke", override], tmp_path / "run")
    with pytest.raises(ConfigValueError, match=named):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run dir or data were touched


def test_beam_decoder_refuses_probabilities():
    logits = torch.randn(20, 99)
    decoder = CTCBeamDecoder(beam_size=4)
    decoder.decode(torch.log_softmax(logits, dim=1).numpy(), np.arange(20))  # fine
    decoder.reset()
    with pytest.raises(ValueError, match="expects log-probabilities.*log_softmax"):
        decoder.decode(torch.softmax(logits, dim=1).numpy(), np.arange(20))


@pytest.mark.parametrize("name", ["random.bin", "random.arpa"])
def test_random_bytes_as_language_model_raise_lm_error(tmp_path, name):
    pytest.importorskip("kenlm")
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(LMError, match=name):
        CharLM(path)
