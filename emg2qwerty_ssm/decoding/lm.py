"""KenLM character language model over charset key-name tokens (docs/decoding-rules.md#beam-search,
"LM application").

The decoder asks the LM one question over and over: "in LM context c, what does token l
score and where does the context go?". ``CharLM`` answers it from a memo table indexed by
(interned context id, label), filled lazily from KenLM, so the beam search can gather the
scores of a whole beam × top-k block with one numpy fancy-index instead of hundreds of
``BaseScore`` calls. The memo is exact: every entry is what ``BaseScore`` returned.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from emg2qwerty_ssm.charset import CharacterSet, charset

log = logging.getLogger(__name__)

__all__ = ["CharLM", "LMError", "resolve_lm_path"]

REPO_ROOT = Path(__file__).resolve().parents[2]
LM_ENV_VAR = "EMG2QWERTY_SSM_LM"

# Multi-letter words that a word-level LM always has and a character LM never has.
_WORD_PROBES = ("the", "and", "of", "to", "in", "is")


class LMError(ValueError):
    """The language model file is missing, unreadable or not a character LM for this charset."""


def resolve_lm_path(path: str | os.PathLike) -> Path:
    """``path`` as given if it exists, else relative to the repository root; else LMError."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_absolute() and (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    raise LMError(
        f"language model file not found: {str(path)!r} (also looked in {REPO_ROOT}). Put "
        "emg2qwerty's wikitext-103-6gram-charlm.bin at models/lm/ or point "
        f"{LM_ENV_VAR} / decoder.lm_path at a KenLM .arpa/.bin file (see docs/decoding.md); "
        "set decoder.lm_path=null to decode without a language model."
    )


def _load_kenlm(path: Path):
    import kenlm

    config = kenlm.Config()
    config.show_progress = False
    try:
        return kenlm.Model(str(path), config)
    except (OSError, RuntimeError, ValueError) as err:  # ValueError: undecodable bytes
        raise LMError(
            f"could not read the language model {str(path)!r}: not a valid KenLM ARPA or binary "
            f"file ({err})"
        ) from err


class CharLM:
    """A KenLM model queried with charset key names (``a``, ``Key.space``, ...).

    Out-of-vocabulary tokens end the current word (``</s>``, then back to ``<s>``), or score
    the unigram ``<unk>`` when already at ``<s>``, exactly as docs/decoding-rules.md#beam-search.
    Scores are log10 and are returned unchanged.

    Args:
        path: a KenLM ``.arpa`` or ``.bin`` file (relative paths also tried from the repo root).
        skip_labels: labels never looked up through the table (the blank and the delete key);
            their table entries stay 0.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        _charset: CharacterSet | None = None,
        skip_labels: tuple[int, ...] = (),
    ) -> None:
        import kenlm

        self._kenlm = kenlm
        self.path = resolve_lm_path(path)
        self.model = _load_kenlm(self.path)
        cs = _charset or charset()
        self.num_labels = cs.num_classes
        self.tokens = [cs.label_to_key(i) for i in range(len(cs))]
        self.in_vocab = np.array([tok in self.model for tok in self.tokens] + [False])
        self._in_vocab_list = self.in_vocab.tolist()
        self._check_vocabulary()
        self.order = self.model.order
        self.bos = kenlm.State()
        self.model.BeginSentenceWrite(self.bos)
        self.unk_score = float(self.model.score("<unk>", bos=False, eos=False))
        self._skip = np.zeros(self.num_labels, dtype=bool)
        self._skip[list(skip_labels)] = True
        self.clear()

    def _check_vocabulary(self) -> None:
        letters = [c for c in "abcdefghijklmnopqrstuvwxyz" if c in self.model]
        if not letters:
            raise LMError(
                f"language model {str(self.path)!r} has none of the tokens a-z in its "
                "vocabulary: it is not a character LM over the charset's key names (build one "
                "with scripts/build_char_lm.py: one token per character, space-separated)"
            )
        words = [w for w in _WORD_PROBES if w in self.model]
        if words:
            raise LMError(
                f"language model {str(self.path)!r} contains multi-character word tokens "
                f"{words}: it looks like a word-level LM, but the decoder needs a character LM "
                "(one token per character; see scripts/build_char_lm.py)"
            )
        if len(letters) < 26:
            log.warning(
                "language model %s lacks the letters %s; they are scored as word boundaries",
                self.path,
                sorted(set("abcdefghijklmnopqrstuvwxyz") - set(letters)),
            )

    # ------------------------------------------------------------------ context table
    def clear(self) -> None:
        """Forget all interned contexts and memoised scores (context 0 is ``<s>``)."""
        self._ctx_index: dict = {self.bos: 0}
        self.ctx_states: list = [self.bos]
        cap = 256
        self.score_table = np.full((cap, self.num_labels), np.nan)
        self.score_table[:, self._skip] = 0.0
        self.next_table = np.zeros((cap, self.num_labels), dtype=np.int64)
        self._eos = np.full(cap, np.nan)

    @property
    def num_contexts(self) -> int:
        return len(self.ctx_states)

    def _intern(self, state) -> int:
        idx = self._ctx_index.get(state)
        if idx is None:
            idx = len(self.ctx_states)
            self._ctx_index[state] = idx
            self.ctx_states.append(state)
            if idx >= len(self.score_table):
                self._grow()
        return idx

    def _grow(self) -> None:
        cap = len(self.score_table)
        extra = np.full((cap, self.num_labels), np.nan)
        extra[:, self._skip] = 0.0
        self.score_table = np.concatenate([self.score_table, extra])
        self.next_table = np.concatenate([self.next_table, np.zeros_like(self.next_table)])
        self._eos = np.concatenate([self._eos, np.full(cap, np.nan)])

    def _fill(self, pairs: np.ndarray) -> None:
        """Memoise KenLM's answer for each ``context * 128 + label`` in ``pairs`` (unique)."""
        # A tight Python loop on purpose: KenLM's Python API scores one token per call.
        new_state = self._kenlm.State
        base_score = self.model.BaseScore
        states, tokens, in_vocab = self.ctx_states, self.tokens, self._in_vocab_list
        index, intern, unk = self._ctx_index, self._intern, self.unk_score
        scores, nexts = [], []
        for pair in pairs.tolist():
            ctx, label = divmod(pair, 128)
            if in_vocab[label]:
                out = new_state()
                scores.append(base_score(states[ctx], tokens[label], out))
                nxt = index.get(out)
                nexts.append(intern(out) if nxt is None else nxt)
            elif ctx:  # out of vocabulary: a word boundary, unless already at <s>
                scores.append(base_score(states[ctx], "</s>", new_state()))
                nexts.append(0)
            else:
                scores.append(unk)
                nexts.append(0)
        ctx_ids, labels = np.divmod(pairs, 128)
        self.score_table[ctx_ids, labels] = scores
        self.next_table[ctx_ids, labels] = nexts

    def lookup(self, ctx: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """LM scores and next contexts for every (context, label) pair.

        Args:
            ctx: (B,) interned context ids.
            labels: (K,) labels.

        Returns:
            (B, K) log10 scores and (B, K) next context ids (0 for skipped labels).
        """
        rows = ctx[:, None]
        scores = self.score_table[rows, labels]
        if np.isnan(scores.sum()):  # one reduction: NaN (not yet memoised) propagates
            b, k = np.nonzero(np.isnan(scores))
            self._fill(np.unique(ctx[b] * 128 + labels[k]))
            scores = self.score_table[rows, labels]
        return scores, self.next_table[rows, labels]

    def eos_score(self, ctx: int) -> float:
        """log10 P(</s> | context ``ctx``)."""
        value = self._eos[ctx]
        if np.isnan(value):
            value = self.model.BaseScore(self.ctx_states[ctx], "</s>", self._kenlm.State())
            self._eos[ctx] = value
        return float(value)

    def compact(self, live: np.ndarray) -> np.ndarray:
        """Keep only the contexts in ``live`` (ids); returns old id -> new id (-1: dropped).

        The memo rows are dropped too (their next-context entries may point at dropped ids);
        they refill on demand with the same values.
        """
        live = np.unique(np.append(live, 0))
        remap = np.full(len(self.ctx_states), -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        states = [self.ctx_states[i] for i in live.tolist()]
        self.clear()
        for state in states[1:]:
            self._intern(state)
        return remap
