"""CTC prefix beam search: reference fixtures, the per-frame oracle, LM and CTC properties."""

from __future__ import annotations

import itertools
import json

import kenlm
import numpy as np
import pytest
from beam_oracle import OracleBeamDecoder

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.decoding import CTCBeamDecoder

CS = charset()
BLANK = CS.null_class
BACKSPACE = CS.key_to_label("Key.backspace")


@pytest.fixture(scope="module")
def cases(reference_dir):
    folder = reference_dir / "decoding"
    with open(folder / "decoder_cases.json") as f:
        meta = json.load(f)
    arrays = np.load(folder / "decoder_cases.npz")
    return [(case, arrays[f"emissions_{case['case']}"]) for case in meta]


@pytest.fixture(scope="module")
def lm_path(reference_dir):
    return str(reference_dir / "decoding" / "reuters-3gram-char.arpa")


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def random_emissions(rng, t_count: int, scale: float, peaky: bool = False) -> np.ndarray:
    """(T, 99) float32 log-softmax of noise, with backspace and space made frequent."""
    logits = rng.normal(size=(t_count, CS.num_classes)) * scale
    logits[:, BACKSPACE] += 1.5
    logits[:, CS.key_to_label("Key.space")] += 1.0
    if peaky:
        logits[:, BLANK] += 3.0
        spikes = rng.choice(t_count, t_count // 3, replace=False)
        logits[spikes, rng.integers(0, 30, len(spikes))] += 8.0
    return log_softmax(logits).astype(np.float32)


def assert_same(fast_out, oracle_out) -> None:
    labels, stamps = oracle_out
    assert fast_out.labels.tolist() == labels
    assert fast_out.timestamps.tolist() == [float(s) for s in stamps]


# ---------------------------------------------------------------------- reference fixtures
VARIANTS = {
    "beam_nolm": (False, False),
    "beam_lm": (True, False),
    "beam_lm_finish": (True, True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reproduces_reference_decodings(cases, lm_path, variant):
    use_lm, finish = VARIANTS[variant]
    decoder = CTCBeamDecoder(
        beam_size=50, max_labels_per_timestep=10, lm_path=lm_path if use_lm else None
    )
    for case, emissions in cases:
        decoder.reset()
        out = decoder.decode(emissions, np.arange(len(emissions)), finish=finish)
        expected = case[variant]
        assert out.text == expected["text"], (case["case"], variant)
        assert out.labels.tolist() == expected["labels"]
        assert out.timestamps.tolist() == expected["timestamps"]


def test_oracle_reproduces_reference_decodings(cases, lm_path):
    # The oracle is the yardstick for everything below, so it must be right too.
    for case, emissions in cases[:3]:
        for variant, (use_lm, finish) in VARIANTS.items():
            oracle = OracleBeamDecoder(
                beam_size=50, max_labels_per_timestep=10, lm_path=lm_path if use_lm else None
            )
            labels, stamps = oracle.decode(emissions, np.arange(len(emissions)), finish=finish)
            assert labels == case[variant]["labels"]
            assert [int(s) for s in stamps] == case[variant]["timestamps"]


def test_decode_batch_reproduces_reference(cases, lm_path):
    t_max = max(len(e) for _, e in cases)
    batch = np.full((t_max, len(cases), CS.num_classes), np.nan, dtype=np.float32)
    for i, (_, emissions) in enumerate(cases):
        batch[: len(emissions), i] = emissions  # NaN padding must never be read
    lengths = np.array([len(e) for _, e in cases])
    decoder = CTCBeamDecoder(lm_path=lm_path)
    decoded = decoder.decode_batch(batch, lengths)
    assert [d.text for d in decoded] == [case["beam_lm"]["text"] for case, _ in cases]


# ---------------------------------------------------------------------- fast == oracle
CONFIGS = [
    dict(beam_size=50, max_labels_per_timestep=10, lm=True, delete_key="Key.backspace"),
    dict(beam_size=50, max_labels_per_timestep=10, lm=False, delete_key="Key.backspace"),
    dict(beam_size=8, max_labels_per_timestep=-1, lm=True, delete_key="Key.backspace"),
    dict(beam_size=20, max_labels_per_timestep=4, lm=True, delete_key=None),
    dict(beam_size=1, max_labels_per_timestep=3, lm=True, delete_key="Key.backspace"),
    dict(beam_size=50, max_labels_per_timestep=1, lm=False, delete_key=None),
]


@pytest.mark.parametrize("peaky", [False, True], ids=["random", "peaky"])
@pytest.mark.parametrize("cfg_index", range(len(CONFIGS)))
def test_fast_decoder_matches_oracle(lm_path, cfg_index, peaky):
    cfg = dict(CONFIGS[cfg_index])
    cfg["lm_path"] = lm_path if cfg.pop("lm") else None
    rng = np.random.default_rng(100 + cfg_index + 10 * peaky)
    emissions = random_emissions(rng, 70, scale=rng.choice([0.5, 2.5]), peaky=peaky)
    stamps = np.arange(len(emissions)) * 0.032 + 5.0
    for finish in (False, True):
        oracle = OracleBeamDecoder(**cfg)
        expected = oracle.decode(emissions, stamps, finish=finish)
        fast = CTCBeamDecoder(**cfg)
        assert_same(fast.decode(emissions, stamps, finish=finish), expected)
        # Same operations in the same order: the whole beam agrees to the last bit.
        np.testing.assert_array_equal(fast.beam_scores, [s.p_total for s in oracle.beam])
        # Online: the same frames in uneven chunks give the same result.
        fast.reset()
        cuts = [0, *sorted(rng.choice(np.arange(1, 70), 4, replace=False).tolist()), 70]
        for a, b in itertools.pairwise(cuts):
            out = fast.decode(emissions[a:b], stamps[a:b], finish=finish and b == 70)
        assert_same(out, expected)


def test_long_peaky_decode_with_compaction_matches_oracle(lm_path, monkeypatch):
    rng = np.random.default_rng(7)
    emissions = random_emissions(rng, 240, scale=1.0, peaky=True)
    stamps = np.arange(len(emissions))
    expected = OracleBeamDecoder(max_labels_per_timestep=10, lm_path=lm_path).decode(
        emissions, stamps
    )
    fast = CTCBeamDecoder(lm_path=lm_path)
    fast.compact_threshold = 300  # compact after every call instead of every ~200k rows
    fast.reset()
    calls, lm_calls = [], []
    original, lm_original = fast._compact, fast.lm.compact
    monkeypatch.setattr(fast, "_compact", lambda: calls.append(fast._path.size) or original())
    monkeypatch.setattr(fast.lm, "compact", lambda live: lm_calls.append(1) or lm_original(live))
    for a in range(0, 240, 40):  # compaction runs at the end of each decode() call
        out = fast.decode(emissions[a : a + 40], stamps[a : a + 40])
    assert_same(out, expected)
    assert len(calls) >= 3 and lm_calls  # label chains, prefixes and the LM memo
    # Live label chains are a small fraction of the rows created.
    assert fast._path.size < min(calls)


def test_lm_memo_survives_reset_without_changing_results(lm_path):
    rng = np.random.default_rng(3)
    first, second = (random_emissions(rng, 60, 1.0, peaky=True) for _ in range(2))
    stamps = np.arange(60)
    decoder = CTCBeamDecoder(lm_path=lm_path)
    decoder.decode(first, stamps)
    decoder.reset()
    warm = decoder.decode(second, stamps)
    assert decoder.lm.num_contexts > 1
    assert_same(
        warm, OracleBeamDecoder(max_labels_per_timestep=10, lm_path=lm_path).decode(second, stamps)
    )


# ---------------------------------------------------------------------- CTC semantics
def forced_emissions(labels: list[int]) -> np.ndarray:
    """Frames that force one path: label, blank, label, blank, ... (log-prob 0, others -inf)."""
    emissions = np.full((2 * len(labels), CS.num_classes), -np.inf)
    for i, label in enumerate(labels):
        emissions[2 * i, label] = 0.0
        emissions[2 * i + 1, BLANK] = 0.0
    return emissions


def test_repeats_collapse_unless_separated_by_blank():
    a = CS.key_to_label("a")
    frames = np.full((5, CS.num_classes), -np.inf)
    for t, label in enumerate([a, a, BLANK, a, a]):
        frames[t, label] = 0.0
    out = CTCBeamDecoder(max_labels_per_timestep=-1).decode(frames, np.arange(5))
    assert out.text == "aa"
    assert out.timestamps.tolist() == [0, 3]  # onsets: first frame of each run


def brute_force_prefix_probs(probs: np.ndarray) -> dict[tuple, float]:
    """Sum of path probabilities per collapsed labelling, by enumerating every alignment."""
    t_count, n_cls = probs.shape
    totals: dict[tuple, float] = {}
    for path in itertools.product(range(n_cls), repeat=t_count):
        out, prev = [], None
        for c in path:
            if c != n_cls - 1 and c != prev:
                out.append(c)
            prev = c
        weight = np.prod([probs[t, c] for t, c in enumerate(path)])
        totals[tuple(out)] = totals.get(tuple(out), 0.0) + weight
    return totals


def test_merged_prefix_scores_equal_exhaustive_ctc_sums():
    # Three live classes (a, b and blank) over 5 frames: with no pruning, every prefix score
    # must be the exact CTC sum over all alignments that collapse to it.
    rng = np.random.default_rng(0)
    small = rng.dirichlet(np.ones(3), size=5)
    expected = brute_force_prefix_probs(small)
    a, b = CS.key_to_label("a"), CS.key_to_label("b")
    emissions = np.full((5, CS.num_classes), -np.inf)
    emissions[:, [a, b, BLANK]] = np.log(small)
    decoder = CTCBeamDecoder(beam_size=1000, max_labels_per_timestep=3)
    decoder.decode(emissions, np.arange(5))
    finite = np.isfinite(decoder.beam_scores)
    assert finite.sum() == len(expected)
    best = sorted(expected.values(), reverse=True)
    np.testing.assert_allclose(np.exp(decoder.beam_scores[finite]), best, rtol=1e-12)
    top = max(expected, key=expected.get)
    label_of = {0: a, 1: b}
    assert decoder.decode(emissions[:0], np.arange(0)).labels.tolist() == [label_of[i] for i in top]


# ---------------------------------------------------------------------- LM semantics
def sentence_labels(text: str) -> list[int]:
    return CS.str_to_labels(text)


@pytest.mark.parametrize("decoder_cls", [CTCBeamDecoder, OracleBeamDecoder])
def test_delete_pairs_leave_lm_total_unchanged(lm_path, decoder_cls):
    sentence = "the quick  brown"
    model = kenlm.Model(lm_path)
    words = sentence.split(" ")
    expected_lm = 0.0
    for i, word in enumerate(words):
        if not word:
            expected_lm += model.score("<unk>", bos=False, eos=False)
        else:
            expected_lm += model.score(" ".join(word), bos=True, eos=i < len(words) - 1)
    weight, bonus = 2.0, 2.0
    expected = weight * expected_lm + bonus * len(sentence)

    rng = np.random.default_rng(1)
    clean = sentence_labels(sentence)
    typos = sentence_labels("xqzTK#.") + [CS.key_to_label("Key.shift")]  # in- and out-of-vocab
    for n_pairs in (0, 1, 3, 6):
        labels = list(clean)
        for _ in range(n_pairs):
            pos = int(rng.integers(0, len(labels) + 1))
            labels[pos:pos] = [int(rng.choice(typos)), BACKSPACE]
        decoder = decoder_cls(
            beam_size=4,
            max_labels_per_timestep=2,
            lm_path=lm_path,
            lm_weight=weight,
            insertion_bonus=bonus,
        )
        emissions = forced_emissions(labels)
        result = decoder.decode(emissions, np.arange(len(emissions)))
        if isinstance(decoder, CTCBeamDecoder):
            assert result.labels.tolist() == labels
            total = decoder.beam_scores[0]
        else:
            assert result[0] == labels
            total = decoder.beam[0].p_total
        # kenlm sums sentence scores in float32; the decoder adds float64 terms.
        assert total == pytest.approx(expected, abs=1e-5), n_pairs


def test_oov_tokens_end_words_and_unk_at_sentence_start(lm_path):
    model = kenlm.Model(lm_path)
    # "a" then "#" (not in the reuters vocabulary): </s> after "a"; a second OOV token at <s>
    # scores <unk> (-2.89165).
    labels = sentence_labels("a##")
    decoder = CTCBeamDecoder(beam_size=2, max_labels_per_timestep=2, lm_path=lm_path)
    decoder.decode(forced_emissions(labels), np.arange(6))
    lm_total = model.score("a", bos=True, eos=True) + model.score("<unk>", bos=False, eos=False)
    assert model.score("<unk>", bos=False, eos=False) == pytest.approx(-2.89165, abs=1e-5)
    assert decoder.beam_scores[0] == pytest.approx(2.0 * lm_total + 2.0 * 3, abs=1e-5)


def test_finish_adds_end_of_sentence_score(lm_path):
    model = kenlm.Model(lm_path)
    labels = sentence_labels("the ca")
    decoder = CTCBeamDecoder(beam_size=2, max_labels_per_timestep=2, lm_path=lm_path)
    decoder.decode(forced_emissions(labels), np.arange(12))
    before = decoder.beam_scores[0]
    decoder.decode(np.zeros((0, CS.num_classes)), np.zeros(0), finish=True)
    eos = model.score("c a", bos=True, eos=True) - model.score("c a", bos=True, eos=False)
    assert decoder.beam_scores[0] == pytest.approx(before + 2.0 * eos, abs=1e-5)


def test_no_lm_means_no_lm_terms():
    labels = sentence_labels("hello world")
    decoder = CTCBeamDecoder(beam_size=3, max_labels_per_timestep=2)
    out = decoder.decode(forced_emissions(labels), np.arange(22), finish=True)
    assert out.text == "hello world"
    assert decoder.beam_scores[0] == 0.0
