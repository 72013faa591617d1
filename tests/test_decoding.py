"""Greedy decoder, the shared decoder API (batch, online, configs) and bad-input errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.data import LabelData
from emg2qwerty_ssm.decoding import CTCBeamDecoder, CTCGreedyDecoder

CS = charset()
BLANK = CS.null_class
CONF = Path(__file__).resolve().parent.parent / "conf" / "decoder"


def peaky(sequence: str) -> np.ndarray:
    """(T, 99) log-probs whose argmax spells ``sequence``; "∅" is the blank."""
    labels = [BLANK if c == "∅" else CS.unicode_to_label(c) for c in sequence]
    logits = np.zeros((len(labels), CS.num_classes))
    logits[np.arange(len(labels)), labels] = 5.0
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


@pytest.fixture(scope="module")
def lm_path(reference_dir):
    return str(reference_dir / "decoding" / "reuters-3gram-char.arpa")


# ---------------------------------------------------------------------- greedy
@pytest.mark.parametrize(
    ("frames", "expected"),
    [("hh∅∅eeell∅loo", "hello"), ("hello", "helo"), ("∅∅∅∅", ""), ("a∅a", "aa"), ("", "")],
)
def test_greedy_spec_cases(frames, expected):
    out = CTCGreedyDecoder().decode(peaky(frames), np.arange(len(frames)))
    assert out.text == expected


def test_greedy_timestamps_are_run_onsets():
    stamps = np.arange(13) * 0.5 + 10.0
    out = CTCGreedyDecoder().decode(peaky("hh∅∅eeell∅loo"), stamps)
    assert out.timestamps.tolist() == [10.0, 12.0, 13.5, 15.0, 15.5]


def test_greedy_online_chunks_equal_one_call():
    emissions = peaky("aab∅bbc∅∅cc")
    decoder = CTCGreedyDecoder()
    whole = decoder.decode(emissions, np.arange(11))
    decoder.reset()
    for a, b in [(0, 1), (1, 4), (4, 6), (6, 11)]:  # a run ("bb") split across chunks
        out = decoder.decode(emissions[a:b], np.arange(a, b))
    assert out.text == whole.text == "abbcc"
    assert out.timestamps.tolist() == whole.timestamps.tolist() == [0, 2, 4, 6, 9]


def test_greedy_reproduces_reference_decodings(reference_dir):
    folder = reference_dir / "decoding"
    cases = json.loads((folder / "decoder_cases.json").read_text())
    arrays = np.load(folder / "decoder_cases.npz")
    emissions = [arrays[f"emissions_{c['case']}"] for c in cases]
    decoder = CTCGreedyDecoder()
    for case, em in zip(cases, emissions, strict=True):
        decoder.reset()
        out = decoder.decode(em, np.arange(len(em)))
        assert out.text == case["greedy"]["text"]
        assert out.labels.tolist() == case["greedy"]["labels"]
        assert out.timestamps.tolist() == case["greedy"]["timestamps"]
    # decode_batch: time-first padded batch, per-item lengths, torch input.
    batch = np.zeros((max(map(len, emissions)), len(cases), CS.num_classes), dtype=np.float32)
    for i, em in enumerate(emissions):
        batch[: len(em), i] = em
    lengths = torch.tensor([len(em) for em in emissions])
    decoded = decoder.decode_batch(torch.from_numpy(batch), lengths)
    assert [d.text for d in decoded] == [c["greedy"]["text"] for c in cases]
    assert all(isinstance(d, LabelData) for d in decoded)


# ---------------------------------------------------------------------- batch API
@pytest.mark.parametrize("decoder_cls", [CTCGreedyDecoder, CTCBeamDecoder])
def test_decode_batch_resets_between_items_and_honours_lengths(decoder_cls):
    first, second = peaky("ab∅"), peaky("cc∅d")
    batch = np.full((4, 2, CS.num_classes), np.nan)  # padding is never read
    batch[:3, 0], batch[:4, 1] = first, second
    decoder = decoder_cls()
    decoded = decoder.decode_batch(batch, np.array([3, 4]))
    assert [d.text for d in decoded] == ["ab", "cd"]
    assert decoded[1].timestamps.tolist() == [0, 3]  # frame indices, restarting per item
    assert decoder.decode_batch(batch[:, :0], np.zeros(0, dtype=int)) == []


@pytest.mark.slow
def test_decode_batch_process_pool_gives_identical_results(lm_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 5, CS.num_classes)) * 2
    batch = logits - np.log(np.exp(logits).sum(axis=2, keepdims=True))
    lengths = np.array([40, 31, 12, 40, 0])
    with CTCBeamDecoder(lm_path=lm_path, num_workers=2) as pooled:
        parallel = pooled.decode_batch(batch, lengths)
        again = pooled.decode_batch(batch[:, :3], lengths[:3])  # the pool is reused
    serial = CTCBeamDecoder(lm_path=lm_path).decode_batch(batch, lengths)
    assert [d.text for d in parallel] == [d.text for d in serial]
    assert [d.timestamps.tolist() for d in parallel] == [d.timestamps.tolist() for d in serial]
    assert [d.text for d in again] == [d.text for d in serial[:3]]


def test_decoders_pickle_by_configuration(lm_path):
    decoder = CTCBeamDecoder(beam_size=7, lm_path=lm_path, lm_weight=1.5)
    clone = pickle.loads(pickle.dumps(decoder))
    assert (clone.beam_size, clone.lm_weight, clone.lm.path) == (7, 1.5, decoder.lm.path)
    emissions = peaky("th∅e")
    assert (
        clone.decode(emissions, np.arange(4)).text == decoder.decode(emissions, np.arange(4)).text
    )


# ---------------------------------------------------------------------- configs
def test_decoder_configs_instantiate(lm_path, monkeypatch):
    greedy = instantiate(OmegaConf.load(CONF / "ctc_greedy.yaml"))
    assert isinstance(greedy, CTCGreedyDecoder)
    cfg = OmegaConf.load(CONF / "ctc_beam.yaml")
    assert (cfg.beam_size, cfg.max_labels_per_timestep, cfg.lm_weight) == (50, 10, 2.0)
    assert (cfg.insertion_bonus, cfg.delete_key) == (2.0, "Key.backspace")
    monkeypatch.setenv("EMG2QWERTY_SSM_LM", lm_path)
    beam = instantiate(cfg)
    assert isinstance(beam, CTCBeamDecoder) and str(beam.lm.path) == lm_path
    # Without the paper's LM in place the default path is an error, not a no-LM decoder.
    monkeypatch.delenv("EMG2QWERTY_SSM_LM")
    monkeypatch.chdir(Path(lm_path).parent)
    if not (Path(__file__).resolve().parent.parent / cfg.lm_path).exists():
        with pytest.raises(InstantiationException, match="LMError.*wikitext-103-6gram-charlm.bin"):
            instantiate(OmegaConf.load(CONF / "ctc_beam.yaml"))
    no_lm = instantiate(OmegaConf.load(CONF / "ctc_beam.yaml"), lm_path=None)
    assert no_lm.lm is None


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("decoder_cls", [CTCGreedyDecoder, CTCBeamDecoder])
def test_bad_emissions_are_rejected_with_clear_errors(decoder_cls):
    decoder = decoder_cls()
    good = peaky("ab")
    with pytest.raises(ValueError, match=r"shape \(T, 99\).*\(2, 98\)"):
        decoder.decode(good[:, :98], np.arange(2))
    with pytest.raises(ValueError, match=r"shape \(T, 99\)"):
        decoder.decode(good[None], np.arange(2))
    nan = good.copy()
    nan[1, 5] = np.nan
    with pytest.raises(ValueError, match="NaN.*frame 1, class 5"):
        decoder.decode(nan, np.arange(2))
    inf = good.copy()
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN/\+inf"):
        decoder.decode(inf, np.arange(2))
    with pytest.raises(ValueError, match="timestamps"):
        decoder.decode(good, np.arange(3))
    with pytest.raises(ValueError, match="timestamps"):
        decoder.decode(good, np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"\(T, N, 99\)"):
        decoder.decode_batch(good, np.array([2]))
    with pytest.raises(ValueError, match="emission_lengths"):
        decoder.decode_batch(good[:, None], np.array([3]))
    with pytest.raises(ValueError, match="emission_lengths"):
        decoder.decode_batch(good[:, None], np.array([1, 1]))


def test_bad_beam_settings_are_rejected():
    with pytest.raises(ValueError, match="beam_size"):
        CTCBeamDecoder(beam_size=0)
    with pytest.raises(ValueError, match="delete_key 'Key.delete'"):
        CTCBeamDecoder(delete_key="Key.delete")
