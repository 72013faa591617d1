"""emg2qwerty's public API, kept: ``charset``, ``data`` and ``decoder`` as documented by
facebookresearch/emg2qwerty (names, dataclass fields, defaults, value types), checked on our
modules. Scripts written for emg2qwerty should only need their imports changed."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import string
from collections import OrderedDict

import kenlm
import numpy as np
import pytest
import scipy.special
import torch

from emg2qwerty_ssm import charset as charset_module
from emg2qwerty_ssm import data as data_module
from emg2qwerty_ssm import decoder as decoder_module
from emg2qwerty_ssm.charset import CharacterSet, KeyChar, UniChar, charset
from emg2qwerty_ssm.data import EMGSessionData, LabelData, WindowedEMGDataset
from emg2qwerty_ssm.decoder import (
    BeamState,
    CTCBeamDecoder,
    CTCGreedyDecoder,
    Decoder,
    TrieNode,
    logsumexp,
)


@pytest.fixture(scope="module")
def lm_path(reference_dir) -> str:
    return str(reference_dir / "decoding" / "reuters-3gram-char.arpa")


def _ab_charset() -> CharacterSet:
    return CharacterSet(_key_to_unicode=OrderedDict([("a", ord("a")), ("b", ord("b"))]))


# ------------------------------------------------------------------------------- names
def test_public_names_exist() -> None:
    for module, names in (
        (charset_module, ["CharacterSet", "KeyChar", "UniChar", "charset"]),
        (data_module, ["EMGSessionData", "LabelData", "WindowedEMGDataset"]),
        (
            decoder_module,
            ["BeamState", "CTCBeamDecoder", "CTCGreedyDecoder", "Decoder", "TrieNode"],
        ),
    ):
        for name in names:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert KeyChar is str and UniChar is str
    assert issubclass(CTCBeamDecoder, Decoder) and issubclass(CTCGreedyDecoder, Decoder)


# ------------------------------------------------------------------------------ charset
def test_character_set_is_the_documented_dataclass() -> None:
    assert dataclasses.is_dataclass(CharacterSet)
    assert [f.name for f in dataclasses.fields(CharacterSet)] == ["_key_to_unicode"]
    cs = CharacterSet()
    assert cs == charset() and charset() is charset()
    assert list(cs.KEY_TO_UNICODE) == list(cs.allowed_keys)
    assert cs.MODIFIER_TO_UNICODE == [
        ("Key.backspace", 0x232B),
        ("Key.enter", 0x23CE),
        ("Key.space", 0x20),
        ("Key.shift", 0x21E7),
    ]
    assert cs.CHAR_TO_UNICODE[:2] == [("a", 97), ("b", 98)]
    assert cs.UNICHAR_TO_KEY["⏎"] == "Key.enter" and cs.UNICHAR_TO_KEY["⇥"] == "Key.tab"
    assert cs.CHAR_SUBSTITUTIONS["’"] == "'"
    assert len(cs) == 98 and cs.num_classes == 99 and cs.null_class == 98
    assert str(cs) == string.ascii_letters + string.digits + string.punctuation + "⌫⏎ ⇧"


def test_unicode_values_are_integer_code_points() -> None:
    cs = charset()
    assert cs.key_to_unicode("Key.enter") == 9166 and cs.key_to_unicode("a") == 97
    assert cs.unicode_to_key(9003) == "Key.backspace"
    assert cs.unicode_to_label(8679) == 97 and cs.label_to_unicode(96) == 32
    assert all(isinstance(u, int) for u in cs.allowed_unicodes)
    assert cs.allowed_chars[94:] == ("⌫", "⏎", " ", "⇧")
    assert cs.key_to_char("Key.shift") == "⇧" and cs.label_to_char(0) == "a"
    assert cs.unicode_to_char(9166) == "⏎"
    # Membership by key name or code point; other types are an error.
    assert "a" in cs and "Key.space" in cs and 97 in cs and 9166 in cs
    assert " " not in cs and "Key.tab" not in cs and 9 not in cs
    with pytest.raises(ValueError):
        _ = 1.5 in cs
    with pytest.raises(ValueError):
        cs.key_to_label("Key.tab")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("aa", "aa"),
        ("\n\r\b\x08", "⏎⏎⌫⌫"),
        ("⏎\n⇧⌫\b", "⏎⏎⇧⌫⌫"),
        ("⏎\n⇧⌫\ufffd\b", "⏎⏎⇧⌫⌫"),
        ("’“”—", '\'""-'),
    ],
)
def test_clean_str(text: str, expected: str) -> None:
    assert charset().clean_str(text) == expected


def test_str_keys_labels_round_trips() -> None:
    cs = charset()
    special = ["Key.backspace"] * 2 + ["Key.enter"] * 3 + ["Key.space"] * 2 + ["Key.shift"]
    assert cs.str_to_keys("\x08⌫⏎\n\r \x20⇧") == special
    assert cs.keys_to_str(special) == "⌫⌫⏎⏎⏎  ⇧"
    assert cs.str_to_keys("the\x08⏎\n") == ["t", "h", "e", "Key.backspace"] + ["Key.enter"] * 2
    for text in (string.ascii_letters, string.punctuation, "\x08⌫⏎\n\r \x20⇧", "’“”—"):
        assert cs.labels_to_str(cs.str_to_labels(text)) == cs.clean_str(text)
    keys = ["a", "Key.shift_r", " ", "’", "Key.ctrl", "Key.shift", "H", "Key.tab"]
    assert cs.clean_keys(keys) == ["a", "Key.space", "'", "Key.shift", "H"]


def test_custom_character_set() -> None:
    cs = _ab_charset()
    assert len(cs) == 2 and cs.null_class == 2 and cs.num_classes == 3
    assert cs.str_to_labels("abc ba") == [0, 1, 1, 0]  # c and space are not in this set
    assert cs.allowed_unicodes == (97, 98)


# --------------------------------------------------------------------------------- data
def test_label_data_keeps_integer_timestamps() -> None:
    ints = LabelData.from_labels([7, 4], timestamps=np.arange(2))
    assert ints.text == "he" and ints.timestamps.dtype.kind == "i"
    floats = LabelData.from_labels([7, 4], timestamps=[0.5, 1.5])
    assert floats.timestamps.dtype == np.float64
    assert LabelData.from_labels([7]).timestamps is None
    assert (ints + LabelData.from_labels([0], [5])).timestamps.tolist() == [0, 1, 5]
    # emg2qwerty's positional and keyword forms: LabelData(text, _timestamps, _charset)
    assert LabelData("ab", [1, 2], charset()) == LabelData(text="ab", _timestamps=[1, 2])
    assert LabelData.from_str("hi\n").labels.dtype == np.int32
    assert str(LabelData.from_str("a\nb")) == "a\nb"
    assert LabelData.from_prompt("hello").text == "hello⏎"
    assert LabelData.from_key({"key": "Key.space", "start": 3.0}).timestamps.tolist() == [3.0]
    assert LabelData.from_key("Key.tab").text == ""


def test_session_and_windows_api(reference_dir) -> None:
    path = reference_dir / "sessions" / "reference_session.hdf5"
    expected = json.loads((path.with_suffix(".expected.json")).read_text())
    assert EMGSessionData.HDF5_GROUP == "emg2qwerty" and EMGSessionData.TIMESTAMPS == "time"
    with EMGSessionData(path) as session:
        assert session.condition == "on_keyboard" and len(session) == 60000
        assert set(session.fields) == {"emg_left", "emg_right", "time"}
        assert isinstance(session.metadata["keystrokes"], list)
        truth = session.ground_truth()
    assert truth.text == expected["ground_truth_text"]
    # emg2qwerty's defaults: the whole session as one window, ToTensor, no padding/jitter.
    signature = inspect.signature(WindowedEMGDataset)
    assert [signature.parameters[k].default for k in ("window_length", "stride", "jitter")] == [
        None,
        None,
        False,
    ]
    assert tuple(signature.parameters["padding"].default) == (0, 0)
    dataset = WindowedEMGDataset(path)
    assert len(dataset) == 1 and dataset.window_length == dataset.stride == 60000
    emg, labels = dataset[0]
    assert emg.shape == (60000, 2, 16) and labels.dtype == torch.int32
    batch = WindowedEMGDataset.collate([dataset[0], dataset[0]])
    assert set(batch) == {"inputs", "targets", "input_lengths", "target_lengths"}
    assert (
        batch["inputs"].shape == (60000, 2, 2, 16) and batch["input_lengths"].dtype == torch.int32
    )


# ------------------------------------------------------------------------------ decoder
def test_logsumexp_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        xs = rng.normal(scale=5.0, size=rng.integers(1, 8)).tolist()
        if rng.random() < 0.3:
            xs[0] = -np.inf
        assert logsumexp(*xs) == pytest.approx(scipy.special.logsumexp(xs), abs=1e-9)
    assert logsumexp(-np.inf, -np.inf) == -np.inf


def test_decoder_constructor_defaults() -> None:
    beam = inspect.signature(CTCBeamDecoder).parameters
    assert list(beam)[:7] == [
        "_charset",
        "beam_size",
        "max_labels_per_timestep",
        "lm_path",
        "lm_weight",
        "insertion_bonus",
        "delete_key",
    ]
    defaults = {k: beam[k].default for k in list(beam)[1:7]}
    assert defaults == {
        "beam_size": 50,
        "max_labels_per_timestep": -1,
        "lm_path": None,
        "lm_weight": 2.0,
        "insertion_bonus": 2.0,
        "delete_key": "Key.backspace",
    }
    assert list(inspect.signature(CTCGreedyDecoder).parameters)[0] == "_charset"
    decoder = CTCBeamDecoder()
    assert decoder.max_labels_per_timestep == -1 and decoder.lm is None
    assert decoder.is_delete_label(94) and not decoder.is_delete_label(0)
    assert CTCBeamDecoder.EOW == "</s>" and CTCBeamDecoder.OOV == "<unk>"


def test_greedy_state_and_integer_timestamps() -> None:
    cs = charset()
    frames = [cs.null_class, 7, 7, cs.null_class, 4, 4, 11]
    emissions = np.log(np.full((len(frames), cs.num_classes), 1e-6))
    emissions[np.arange(len(frames)), frames] = 0.0
    decoder = CTCGreedyDecoder(cs)
    out = decoder.decode(emissions, timestamps=np.arange(len(frames)))
    assert out.text == "hel" and out.timestamps.tolist() == [1, 4, 6]
    assert out.timestamps.dtype.kind == "i"
    assert decoder.decoding == [7, 4, 11] and decoder.timestamps == [1, 4, 6]
    assert decoder.prev_label == 11
    decoder.reset()
    assert decoder.decoding == [] and decoder.prev_label == cs.null_class
    (batched,) = decoder.decode_batch(emissions[:, None], np.array([len(frames)]))
    assert batched.timestamps.dtype.kind == "i"


def test_beam_state_without_lm() -> None:
    cs = charset()
    labels = cs.str_to_labels("the quick  brown")
    state = BeamState.init(cs.null_class)
    assert state.label_node.is_root and state.label_node.depth == 0
    assert state.label == cs.null_class and state.decoding == [] and state.p_total == 0.0
    for attribute in ("lm_state", "lm_states", "lm_score", "lm_scores"):
        with pytest.raises(RuntimeError):
            getattr(state, attribute)
    for i, label in enumerate(labels):
        prev = state
        state = BeamState(label_node=prev.label_node.child((label, i)))
        assert state.label_node.parent == prev.label_node and state.label_node.depth == i + 1
        assert state.label == label and state.decoding == labels[: i + 1]
        assert state.timestamps == list(range(i + 1))
        assert state.hash().digest() == hashlib.sha256(bytes(state.decoding)).digest()
        assert state.hash().digest() == prev.hash(label).digest()


def test_beam_state_with_lm(lm_path: str) -> None:
    cs = charset()
    text = "the quick  brown"
    keys, labels = cs.str_to_keys(text), cs.str_to_labels(text)
    lm = kenlm.Model(lm_path)
    state = BeamState.init(cs.null_class, lm=lm)
    assert state.lm_node.is_root and state.lm_score == 0.0 and len(state.lm_states) == 1
    for i, label in enumerate(labels):
        prev = state
        lm_state = kenlm.State()
        score = lm.BaseScore(prev.lm_state, keys[i], lm_state)
        state = BeamState(prev.label_node.child((label, i)), prev.lm_node.child((lm_state, score)))
        assert state.lm_node.depth == i + 1 and len(state.lm_scores) == i + 2
    assert sum(state.lm_scores) == pytest.approx(lm.score(" ".join(keys), bos=True, eos=False))


def test_two_paths_to_one_prefix_keep_their_own_onsets(lm_path: str) -> None:
    cs = _ab_charset()
    decoder = CTCBeamDecoder(_charset=cs, lm_path=lm_path, delete_key=None)
    start = BeamState.init(cs.null_class, lm=decoder.lm)

    def walk(path: str) -> BeamState:
        state, previous = start, cs.null_class
        for t, label in enumerate(cs.str_to_labels(path)):
            if label != previous:
                state, previous = decoder.next_state(state, label=label, timestamp=t), label
        return state

    first, second = walk("abbbbbb"), walk("aaaaaab")
    assert first.decoding == second.decoding == [0, 1]
    assert first.lm_scores == second.lm_scores
    assert first.timestamps == [0, 1] and second.timestamps == [0, 6]

    # The decoder itself: the surviving path's onsets, as integers.
    for path, onsets in (("abb", [0, 1]), ("aab", [0, 2])):
        emissions = np.full((3, cs.num_classes), 1e-10)
        emissions[np.arange(3), cs.str_to_labels(path)] = 1.0
        decoder = CTCBeamDecoder(cs, beam_size=1, lm_path=lm_path, delete_key=None)
        out = decoder.decode(np.log(emissions), timestamps=np.arange(3))
        assert out.text == "ab" and out.timestamps.tolist() == onsets
        assert out.timestamps.dtype.kind == "i"


@pytest.mark.parametrize("seed", range(6))
def test_lm_terms_are_unchanged_by_typos_and_deletes(lm_path: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lm_weight, insertion_bonus = [(0.0, 0.5), (0.5, 1.0), (1.0, 0.0)][seed % 3]
    cs, lm = charset(), kenlm.Model(lm_path)
    text = "the quick  brown"
    words = text.split(" ")
    words_score = sum(
        lm.score(" ".join(word), bos=True, eos=i != len(words) - 1)
        if word
        else lm.score("<unk>", bos=False, eos=False)
        for i, word in enumerate(words)
    )
    expected = lm_weight * words_score + insertion_bonus * len(text)
    labels = cs.str_to_labels(text)
    delete = cs.key_to_label("Key.backspace")
    for _ in range(int(rng.integers(0, 12))):
        pos = int(rng.integers(0, len(labels) + 1))
        labels[pos:pos] = [int(rng.integers(0, len(cs))), delete]
    decoder = CTCBeamDecoder(lm_path=lm_path, lm_weight=lm_weight, insertion_bonus=insertion_bonus)
    state = BeamState.init(cs.null_class, lm=decoder.lm)
    total = 0.0
    for label in labels:
        nxt = decoder.next_state(state, label=label)
        total += decoder.lm_score(state, nxt)
        state = nxt
    assert total == pytest.approx(expected, abs=1e-4)
    walked = lm_weight * sum(state.lm_scores) + insertion_bonus * state.lm_node.depth
    assert walked == pytest.approx(expected, abs=1e-4)


def test_beam_results_match_the_reference_and_the_project_decoder(
    reference_dir, lm_path: str
) -> None:
    folder = reference_dir / "decoding"
    case = json.loads((folder / "decoder_cases.json").read_text())[0]
    emissions = np.load(folder / "decoder_cases.npz")["emissions_0"]
    decoder = CTCBeamDecoder(max_labels_per_timestep=10, lm_path=lm_path)
    out = decoder.decode(emissions, np.arange(len(emissions)))
    assert out.text == case["beam_lm"]["text"]
    assert out.timestamps.tolist() == case["beam_lm"]["timestamps"]
    assert out.timestamps.dtype.kind == "i"
    best = decoder.get_best_decodings(k=3)
    assert len(best) == 3 and best[0] == (out.labels.tolist(), out.timestamps.tolist())
    finished = decoder.finish()
    assert isinstance(finished, LabelData)
    assert finished.text == case["beam_lm_finish"]["text"]
    (batched,) = decoder.decode_batch(emissions[:, None], np.array([len(emissions)]))
    assert batched.text == case["beam_lm"]["text"] and batched.timestamps.dtype.kind == "i"
    # The default (every label each frame) also works; TrieNode is the documented helper.
    assert CTCBeamDecoder().decode(emissions[:8], np.arange(8)).timestamps.dtype.kind == "i"
    root = TrieNode((98, 0))
    assert list(root.child((1, 3)).child((2, 4)).values) == [(98, 0), (1, 3), (2, 4)]
