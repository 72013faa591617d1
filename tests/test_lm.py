"""Character LM: loading, vocabulary checks, KenLM semantics, corpus preprocessing, lmplz."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kenlm
import numpy as np
import pytest

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.decoding import CharLM, CTCBeamDecoder, LMError
from emg2qwerty_ssm.decoding.lm_corpus import char_lm_lines

CS = charset()
REPO = Path(__file__).resolve().parent.parent


def kenlm_tool(name: str) -> str | None:
    for folder in (os.environ.get("KENLM_BIN"), REPO / "build" / "kenlm" / "bin"):
        if folder and (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    return shutil.which(name)


LMPLZ = kenlm_tool("lmplz")
BUILD_BINARY = kenlm_tool("build_binary")
needs_lmplz = pytest.mark.skipif(
    LMPLZ is None or BUILD_BINARY is None,
    reason="KenLM's lmplz/build_binary not built (scripts/build_lmplz.sh, `make lm`)",
)


@pytest.fixture(scope="module")
def lm_path(reference_dir):
    return str(reference_dir / "decoding" / "reuters-3gram-char.arpa")


def write_arpa(path: Path, unigrams: list[str]) -> Path:
    # KenLM's probing model needs order >= 2: one bigram "<s> first-token".
    lines = ["\\data\\", f"ngram 1={len(unigrams) + 3}", "ngram 2=1", "", "\\1-grams:"]
    lines += ["-2.0\t<unk>\t0", "0\t<s>\t-0.5", "-1.0\t</s>\t0"]
    lines += [f"-1.5\t{token}\t-0.3" for token in unigrams]
    lines += ["", "\\2-grams:", f"-0.5\t<s> {unigrams[0]}"]
    path.write_text("\n".join([*lines, "", "\\end\\", ""]))
    return path


# ---------------------------------------------------------------------- KenLM semantics
def test_tokens_are_key_names_and_oov_tokens_end_words(lm_path):
    lm = CharLM(lm_path)
    model = kenlm.Model(lm_path)
    a, hash_, space = (CS.key_to_label(k) for k in ("a", "#", "Key.space"))
    assert lm.in_vocab[a] and not lm.in_vocab[hash_] and not lm.in_vocab[space]
    assert lm.in_vocab[CS.key_to_label("!")]  # punctuation that the reuters LM has
    scores, nxt = lm.lookup(np.array([0]), np.array([a, hash_]))
    bos, after_a = kenlm.State(), kenlm.State()
    model.BeginSentenceWrite(bos)
    assert scores[0, 0] == model.BaseScore(bos, "a", after_a)
    assert scores[0, 1] == pytest.approx(-2.89165, abs=1e-5)  # <unk> at <s>
    assert nxt[0, 1] == 0  # stays at <s>
    ctx_a = nxt[0, 0]
    scores, nxt = lm.lookup(np.array([ctx_a]), np.array([hash_, space]))
    end = model.BaseScore(after_a, "</s>", kenlm.State())
    assert scores.tolist() == [[end, end]] and nxt.tolist() == [[0, 0]]


def test_memo_compaction_keeps_live_contexts(lm_path):
    lm = CharLM(lm_path)
    labels = np.array(CS.str_to_labels("thequickbrown"))
    ctx = np.zeros(1, dtype=np.int64)
    path = [0]
    for label in labels:
        ctx = lm.lookup(ctx, np.array([label]))[1][:, 0]
        path.append(int(ctx[0]))
    before = lm.lookup(np.array(path), labels)[0]
    remap = lm.compact(np.array(path[-3:]))
    assert lm.num_contexts == 4  # <s> + three live contexts
    new_ids = remap[np.array(path[-3:])]
    after = lm.lookup(new_ids, labels)[0]
    np.testing.assert_array_equal(after, before[-3:])


# ---------------------------------------------------------------------- bad LM files
def test_missing_lm_file_is_an_error(tmp_path):
    with pytest.raises(LMError, match="not found.*nope.arpa.*EMG2QWERTY_SSM_LM"):
        CTCBeamDecoder(lm_path=tmp_path / "nope.arpa")


def test_corrupt_lm_file_is_an_error(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(LMError, match="could not read.*bad.bin"):
        CTCBeamDecoder(lm_path=bad)
    truncated = tmp_path / "cut.arpa"
    truncated.write_text("\\data\\\nngram 1=5\n\n\\1-grams:\n-1.0\ta\t0\n")
    with pytest.raises(LMError, match="cut.arpa"):
        CharLM(truncated)


def test_lm_without_character_tokens_is_an_error(tmp_path):
    digits = write_arpa(tmp_path / "digits.arpa", ["1", "2", "3"])
    with pytest.raises(LMError, match="none of the tokens a-z"):
        CTCBeamDecoder(lm_path=digits)
    words = write_arpa(tmp_path / "words.arpa", ["the", "and", "a", "cat", *"bcdefg"])
    with pytest.raises(LMError, match="word-level"):
        CTCBeamDecoder(lm_path=words)


def test_lm_missing_some_letters_loads_with_a_warning(tmp_path, caplog):
    partial = write_arpa(tmp_path / "abc.arpa", ["a", "b", "c"])
    lm = CharLM(partial)
    assert lm.in_vocab[CS.key_to_label("b")] and not lm.in_vocab[CS.key_to_label("z")]
    assert "lacks the letters" in caplog.text


# ---------------------------------------------------------------------- corpus / lmplz
def test_corpus_preprocessing_matches_emg2qwerty():
    text = ["Hello, World! e-mail café don't", "  U.S. (ok) 42 x\tYes."]
    assert list(char_lm_lines(text)) == ["h e l l o", "w o r l d", "o k", "x", "y e s"]


def test_build_char_lm_without_lmplz_says_how_to_build_it(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n")
    script = REPO / "scripts" / "build_char_lm.py"
    cmd = [sys.executable, script, corpus, tmp_path / "out.arpa", "--kenlm-bin", tmp_path]
    result = subprocess.run(cmd, capture_output=True)
    assert result.returncode != 0
    assert b"lmplz not found" in result.stderr and b"build_lmplz.sh" in result.stderr
    assert not (tmp_path / "out.arpa").exists()


@needs_lmplz
@pytest.mark.slow
def test_build_char_lm_arpa_and_binary(tmp_path, reference_dir):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog.\n" * 20 + "A cat sat.\n")
    script = REPO / "scripts" / "build_char_lm.py"
    for suffix in ("arpa", "bin"):
        out = tmp_path / f"lm.{suffix}"
        subprocess.run(
            [sys.executable, script, corpus, out, "--order", "4", "--corpus-out", tmp_path / "c"],
            check=True,
            capture_output=True,
        )
        model = kenlm.Model(str(out))
        assert model.order == 4
        assert model.score("t h e", bos=True, eos=True) > model.score("e h t", True, True)
        lm = CharLM(out)  # passes the vocabulary checks
        assert lm.in_vocab[CS.key_to_label("q")] and not lm.in_vocab[CS.key_to_label(".")]
    assert (tmp_path / "c").read_text().splitlines()[:2] == ["t h e", "q u i c k"]
    # The synthetic demo's LM: the prompts' own text source.
    out = tmp_path / "synthetic.arpa"
    subprocess.run(
        [sys.executable, script, "--synthetic-prompts", out, "--order", "3"],
        check=True,
        capture_output=True,
    )
    assert CharLM(out).in_vocab[CS.key_to_label("z")]


@needs_lmplz
def test_binary_lm_decodes_like_its_arpa(tmp_path, lm_path, reference_dir):
    binary = tmp_path / "reuters.bin"
    subprocess.run([BUILD_BINARY, lm_path, binary], check=True, capture_output=True)
    folder = reference_dir / "decoding"
    cases = json.loads((folder / "decoder_cases.json").read_text())
    arrays = np.load(folder / "decoder_cases.npz")
    decoder = CTCBeamDecoder(lm_path=binary)
    for case in cases[:3]:
        emissions = arrays[f"emissions_{case['case']}"]
        decoder.reset()
        out = decoder.decode(emissions, np.arange(len(emissions)), finish=True)
        assert out.labels.tolist() == case["beam_lm_finish"]["labels"]
