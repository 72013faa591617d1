"""A straightforward, per-frame Python prefix beam search: the oracle for the fast decoder.

This follows docs/decoding-rules.md#beam-search step by step, with one Python object per beam state
and per trie node, exactly in the reference's loop order (beam best-to-worst, then labels by
descending emission). It is deliberately slow and simple; ``emg2qwerty_ssm.decoding.CTCBeamDecoder``
must produce identical labels and timestamps. Shared conventions (so that the two agree to
the last bit): emissions in float64, ``np.logaddexp`` as the log-sum-exp, labels ordered by
a stable descending sort (ties: lower label first), Python's stable ``sorted`` for the beam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import kenlm
import numpy as np

from emg2qwerty_ssm.charset import charset


@dataclass
class Node:
    """A trie node; ``value`` is (label, onset) for labels and (kenlm state, score) for the LM."""

    value: tuple
    parent: Node | None = None


@dataclass
class State:
    label_node: Node
    lm_node: Node
    key: tuple  # the label sequence (the reference keys by its SHA-256 digest; same identity)
    p_b: float = -np.inf
    p_nb: float = -np.inf

    @property
    def p_total(self) -> float:
        return float(np.logaddexp(self.p_b, self.p_nb))


@dataclass
class OracleBeamDecoder:
    beam_size: int = 50
    max_labels_per_timestep: int = -1
    lm_path: str | None = None
    lm_weight: float = 2.0
    insertion_bonus: float = 2.0
    delete_key: str | None = "Key.backspace"
    beam: list[State] = field(init=False)

    def __post_init__(self) -> None:
        self.charset = charset()
        self.blank = self.charset.null_class
        self.lm = kenlm.Model(self.lm_path) if self.lm_path is not None else None
        self.delete_label = (
            self.charset.key_to_label(self.delete_key) if self.delete_key is not None else None
        )
        self.bos = kenlm.State()
        if self.lm is not None:
            self.lm.BeginSentenceWrite(self.bos)
            self.unk_score = self.lm.score("<unk>", bos=False, eos=False)
        self.reset()

    def reset(self) -> None:
        root_label = Node((None, None))
        root_lm = Node((self.bos, 0.0))
        self.beam = [State(root_label, root_lm, (), p_b=0.0)]

    # ------------------------------------------------------------------ LM
    def apply_lm(self, lm_node: Node, label: int) -> Node:
        if self.lm is None:
            return lm_node
        if label == self.delete_label:
            return lm_node.parent if lm_node.parent is not None else lm_node
        state, _ = lm_node.value
        token = self.charset.label_to_key(label)
        out = kenlm.State()
        if token in self.lm:
            score = self.lm.BaseScore(state, token, out)
            return Node((out, score), lm_node)
        if state != self.bos:
            score = self.lm.BaseScore(state, "</s>", out)
            return Node((self.bos, score), lm_node)
        return Node((self.bos, self.unk_score), lm_node)

    def lm_term(self, prev: State, nxt: State, label: int) -> float:
        if self.lm is None:
            return 0.0
        if label != self.delete_label:
            return self.lm_weight * nxt.lm_node.value[1] + self.insertion_bonus
        if prev.lm_node.parent is not None:
            return -(self.lm_weight * prev.lm_node.value[1] + self.insertion_bonus)
        return 0.0

    # ------------------------------------------------------------- decoding
    def decode(
        self, emissions: np.ndarray, timestamps: np.ndarray, finish: bool = False
    ) -> tuple[list[int], list]:
        emissions = np.asarray(emissions, dtype=np.float64)
        logaddexp = np.logaddexp
        for t in range(len(emissions)):
            scores = emissions[t]
            order = np.argsort(-scores, kind="stable")
            if self.max_labels_per_timestep > 0:
                order = order[: self.max_labels_per_timestep]
            next_beam: dict[tuple, State] = {}
            for prev in self.beam:
                same = next_beam.get(prev.key)
                if same is None:
                    same = State(prev.label_node, prev.lm_node, prev.key)
                    next_beam[prev.key] = same
                last = prev.label_node.value[0]
                for label in order.tolist():
                    p = float(scores[label])
                    if label == self.blank:
                        same.p_b = float(logaddexp(same.p_b, prev.p_b + p))
                        same.p_b = float(logaddexp(same.p_b, prev.p_nb + p))
                        continue
                    key = (*prev.key, label)
                    ext = next_beam.get(key)
                    if ext is None:
                        ext = State(
                            Node((label, timestamps[t]), prev.label_node),
                            self.apply_lm(prev.lm_node, label),
                            key,
                        )
                        next_beam[key] = ext
                    q = self.lm_term(prev, ext, label)
                    if label == last:
                        same.p_nb = float(logaddexp(same.p_nb, prev.p_nb + p))
                        ext.p_nb = float(logaddexp(ext.p_nb, prev.p_b + p + q))
                    else:
                        ext.p_nb = float(logaddexp(ext.p_nb, prev.p_b + p + q))
                        ext.p_nb = float(logaddexp(ext.p_nb, prev.p_nb + p + q))
            self.beam = sorted(next_beam.values(), key=lambda s: s.p_total, reverse=True)[
                : self.beam_size
            ]
        if finish:
            self.finish()
        return self.best()

    def finish(self) -> None:
        if self.lm is not None:
            for s in self.beam:
                state = s.lm_node.value[0]
                if state != self.bos:
                    score = self.lm_weight * self.lm.BaseScore(state, "</s>", kenlm.State())
                    s.p_b += score
                    s.p_nb += score
        self.beam = sorted(self.beam, key=lambda s: s.p_total, reverse=True)

    def best(self) -> tuple[list[int], list]:
        labels, stamps = [], []
        node = self.beam[0].label_node
        while node.parent is not None:
            labels.append(node.value[0])
            stamps.append(node.value[1])
            node = node.parent
        return labels[::-1], stamps[::-1]
