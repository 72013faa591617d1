"""emg2qwerty's ``decoder`` module, kept: ``from emg2qwerty_ssm.decoder import ...``.

Scripts written against facebookresearch/emg2qwerty's ``emg2qwerty.decoder`` run against
this module by changing the import (docs/emg2qwerty-api.md). The decoders are this project's
(``emg2qwerty_ssm.decoding``: same results, a vectorised beam search); what this module adds
is emg2qwerty's calling convention on top of them:

- constructor order and defaults: ``CTCGreedyDecoder(_charset)``,
  ``CTCBeamDecoder(_charset, beam_size=50, max_labels_per_timestep=-1, lm_path=None,
  lm_weight=2.0, insertion_bonus=2.0, delete_key="Key.backspace")`` (the project's own class
  defaults to 10 labels per step, the value every config uses);
- emg2qwerty's helpers: ``logsumexp``, ``TrieNode``, ``BeamState`` (the per-state record of
  the reference algorithm) with the decoder's per-state steps ``next_state``, ``apply_lm``
  and ``lm_score`` (docs/decoding-rules.md#lm-scoring) — the vectorised decoder itself keeps
  its beam in arrays and does not use them —, ``get_best_decodings``, ``is_delete_label``,
  ``lm_state_bow``, ``oov_score``, a ``finish()`` that returns the decoding, and the greedy
  decoder's ``decoding`` / ``timestamps`` / ``prev_label`` state.

Timestamps come back with the caller's dtype: frame indices (``decode_batch``) are integers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

import numpy as np

from emg2qwerty_ssm.charset import CharacterSet
from emg2qwerty_ssm.data import LabelData
from emg2qwerty_ssm.decoding import beam as _beam
from emg2qwerty_ssm.decoding.base import Decoder
from emg2qwerty_ssm.decoding.beam import CTCBeamDecoder as _CTCBeamDecoder
from emg2qwerty_ssm.decoding.greedy import CTCGreedyDecoder as _CTCGreedyDecoder

__all__ = [
    "BeamState",
    "CTCBeamDecoder",
    "CTCGreedyDecoder",
    "Decoder",
    "TrieNode",
    "logsumexp",
]


def logsumexp(*xs: float) -> float:
    """log(Σ exp(x)) of scalars, exact for ``-inf`` arguments (all ``-inf`` -> ``-inf``)."""
    top = max(xs)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(x - top) for x in xs))


@dataclass
class TrieNode:
    """A node of a parent-pointer trie (no child links, so duplicate children are allowed
    and each path keeps its own onset times). ``value`` is (label, onset) in the label trie
    and (LM state, LM score) in the LM trie."""

    value: Any
    parent: TrieNode | None = None

    def child(self, value: Any) -> TrieNode:
        return type(self)(value=value, parent=self)

    @property
    def values(self) -> Iterator[Any]:
        """Values from the root down to this node."""
        chain = []
        node: TrieNode | None = self
        while node is not None:  # a loop, not recursion: paths can be long
            chain.append(node.value)
            node = node.parent
        return reversed(chain)

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def depth(self) -> int:
        depth, node = 0, self.parent
        while node is not None:
            depth, node = depth + 1, node.parent
        return depth

    def __str__(self) -> str:
        parent = None if self.parent is None else self.parent.value
        return f"TrieNode: value={self.value} parent={parent}"


@dataclass
class BeamState:
    """One prefix of a CTC beam: its label-trie node (labels and onsets), its LM-trie node
    (LM states and scores) and the log-probabilities of ending in blank (``p_b``) and in a
    label (``p_nb``). Keyed by a SHA-256 digest of the label sequence, extended one byte per
    label (``hash(next_label)``)."""

    label_node: TrieNode
    lm_node: TrieNode | None = None
    p_b: float = -np.inf
    p_nb: float = -np.inf
    _hash: InitVar[Any] = None

    def __post_init__(self, _hash: Any) -> None:
        if _hash is None:
            _hash = hashlib.sha256(bytes(self.decoding))
        self.hash_ = _hash

    @classmethod
    def init(cls, blank_label: int, lm: Any = None) -> BeamState:
        """The empty prefix: probability 1 of ending in blank; the label trie's root holds
        ``(blank_label, 0)``, the LM trie's root KenLM's ``<s>`` state with score 0."""
        lm_node = None
        if lm is not None:
            import kenlm  # only with an LM

            state = kenlm.State()
            getattr(lm, "model", lm).BeginSentenceWrite(state)  # a kenlm.Model or our CharLM
            lm_node = TrieNode(value=(state, 0.0))
        return cls(TrieNode(value=(blank_label, 0)), lm_node, p_b=0.0, p_nb=-np.inf)

    @property
    def p_total(self) -> float:
        return logsumexp(self.p_b, self.p_nb)

    @property
    def label(self) -> int:
        return int(self.label_node.value[0])

    @property
    def timestamp(self) -> Any:
        return self.label_node.value[1]

    @property
    def decoding(self) -> list[int]:
        """Labels of the prefix (the root's blank excluded)."""
        return [value[0] for value in self.label_node.values][1:]

    @property
    def timestamps(self) -> list[Any]:
        return [value[1] for value in self.label_node.values][1:]

    def _lm(self) -> TrieNode:
        if self.lm_node is None:
            raise RuntimeError("BeamState has no LM node (create it with init(..., lm=model))")
        return self.lm_node

    @property
    def lm_state(self) -> Any:
        return self._lm().value[0]

    @property
    def lm_states(self) -> list[Any]:
        return [value[0] for value in self._lm().values]

    @property
    def lm_score(self) -> float:
        return float(self._lm().value[1])

    @property
    def lm_scores(self) -> list[float]:
        return [value[1] for value in self._lm().values]

    def hash(self, next_label: int | None = None) -> Any:
        """The digest object of this prefix, or of it extended by ``next_label``."""
        if next_label is None:
            return self.hash_
        extended = self.hash_.copy()
        extended.update(bytes([next_label]))
        return extended

    def __str__(self) -> str:
        text = (
            f"BeamState: label={self.label} len(decoding)={len(self.decoding)} "
            f"p_b={self.p_b} p_nb={self.p_nb} p_total={self.p_total}"
        )
        if self.lm_node is not None:
            text += f" len(lm_states)={len(self.lm_states)} lm_score={self.lm_score}"
        return text


class CTCGreedyDecoder(_CTCGreedyDecoder):
    """emg2qwerty's ``CTCGreedyDecoder(_charset)``; see ``emg2qwerty_ssm.decoding``."""

    def __init__(self, _charset: CharacterSet | None = None, num_workers: int = 0) -> None:
        super().__init__(num_workers=num_workers, _charset=_charset)

    @property
    def decoding(self) -> list[int]:
        """Labels emitted since the last ``reset()``."""
        return np.concatenate(self._labels).astype(np.int64).tolist()

    @property
    def timestamps(self) -> list[Any]:
        """Onsets of :attr:`decoding`."""
        return np.concatenate(self._times).tolist()

    @property
    def prev_label(self) -> int:
        """The previous frame's argmax (the blank after ``reset()``)."""
        return int(self._prev)


class CTCBeamDecoder(_CTCBeamDecoder):
    """emg2qwerty's ``CTCBeamDecoder`` argument order and defaults (all labels per step)."""

    EOW: ClassVar[str] = "</s>"  # KenLM's end-of-sentence token, used as end of word
    OOV: ClassVar[str] = "<unk>"  # KenLM's out-of-vocabulary token

    def __init__(
        self,
        _charset: CharacterSet | None = None,
        beam_size: int = 50,
        max_labels_per_timestep: int = -1,
        lm_path: str | None = None,
        lm_weight: float = 2.0,
        insertion_bonus: float = 2.0,
        delete_key: str | None = "Key.backspace",
        num_workers: int = 0,
    ) -> None:
        self._time_dtype: np.dtype = np.dtype(np.int64)
        super().__init__(
            beam_size=beam_size,
            max_labels_per_timestep=max_labels_per_timestep,
            lm_path=lm_path,
            lm_weight=lm_weight,
            insertion_bonus=insertion_bonus,
            delete_key=delete_key,
            num_workers=num_workers,
            _charset=_charset,
        )

    def is_delete_label(self, label: int) -> bool:
        return self.delete_key is not None and int(label) == self.delete_label

    def decode(
        self, emissions: Any, timestamps: Sequence | np.ndarray, finish: bool = False
    ) -> LabelData:
        self._time_dtype = np.asarray(timestamps).dtype
        return super().decode(emissions, timestamps, finish)

    def finish(self) -> LabelData:
        """End the sequence (``</s>`` LM scores, re-rank) and return the best decoding."""
        super().finish()
        labels, times = self._best()
        return self._label_data(labels, times, self._time_dtype)

    def get_best_decodings(self, k: int = 5) -> list[tuple[list[int], list[Any]]]:
        """(labels, onsets) of the ``k`` best prefixes of the current beam, best first."""
        parent = self._path.cols["parent"]
        label = self._path.cols["label"]
        time = self._path.cols["time"]
        out = []
        for node in self._it[_beam._PATH, :k].tolist():
            chain = []
            while node > 0:
                chain.append(node)
                node = int(parent[node])
            chain.reverse()
            times = time[chain].astype(self._time_dtype) if chain else time[chain]
            out.append((label[chain].astype(np.int64).tolist(), times.tolist()))
        return out

    # ------------------------------------------------ the per-state reference steps
    @property
    def lm_state_bow(self) -> Any:
        """KenLM's ``<s>`` state, used as "beginning of word" (None without an LM)."""
        return None if self.lm is None else self.lm.bos

    @property
    def oov_score(self) -> float | None:
        """The unigram ``<unk>`` log10 score: the LM score of an out-of-vocabulary token."""
        return None if self.lm is None else self.lm.unk_score

    def apply_lm(self, prev_lm_state: Any, label: int) -> tuple[Any, float]:
        """(next KenLM state, log10 score) of ``label`` after ``prev_lm_state``: the key name
        if the LM knows it; else ``</s>`` (back to ``<s>``), or ``<unk>`` when already at
        ``<s>``."""
        if self.lm is None:
            raise RuntimeError("apply_lm needs a decoder built with lm_path")
        if self.is_delete_label(label):
            raise ValueError("apply_lm: the delete label has no LM score (it undoes one)")
        import kenlm

        model, bow = self.lm.model, self.lm.bos
        key = self._charset.label_to_key(label)
        if key in model:
            state = kenlm.State()
            return state, model.BaseScore(prev_lm_state, key, state)
        if prev_lm_state != bow:
            return bow, model.BaseScore(prev_lm_state, self.EOW, kenlm.State())
        return bow, self.lm.unk_score

    def next_state(
        self,
        prev_state: BeamState,
        label: int | None = None,
        timestamp: Any = None,
        cache: dict[bytes, BeamState] | None = None,
    ) -> BeamState:
        """``prev_state`` extended by ``label`` (None: the same prefix, for a blank or a
        collapsed repeat), looked up in / added to ``cache`` by prefix digest. A delete label
        extends the label trie but moves the LM trie one node up."""
        digest = prev_state.hash(label)
        key = digest.digest()
        if cache is not None and key in cache:
            return cache[key]
        lm_node = prev_state.lm_node
        if label is None:
            label_node = prev_state.label_node
        else:
            label_node = prev_state.label_node.child((label, timestamp))
            if self.lm is not None and lm_node is not None:
                if not self.is_delete_label(label):
                    lm_node = lm_node.child(self.apply_lm(prev_state.lm_state, label))
                elif not lm_node.is_root:
                    lm_node = lm_node.parent
        state = BeamState(label_node, lm_node, _hash=digest)
        if cache is not None:
            cache[key] = state
        return state

    def lm_score(self, prev_state: BeamState, next_state: BeamState) -> float:
        """The LM term added on the step ``prev_state`` -> ``next_state`` (natural-log units
        only through ``lm_weight``): ``lm_weight * score + insertion_bonus`` for a new label,
        its negation for a delete that undoes one, 0 for a delete at the root or without an LM."""
        if self.lm is None:
            return 0.0
        if not self.is_delete_label(next_state.label):
            return self.lm_weight * next_state.lm_score + self.insertion_bonus
        if prev_state.lm_node is not None and not prev_state.lm_node.is_root:
            return -(self.lm_weight * prev_state.lm_score + self.insertion_bonus)
        return 0.0
