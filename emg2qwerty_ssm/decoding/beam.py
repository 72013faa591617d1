"""CTC prefix beam search with a character n-gram KenLM (docs/decoding-rules.md#beam-search),
vectorised per frame.

Same algorithm, same floating-point operations in the same order as the straightforward
per-state loop (tests/beam_oracle.py), but each frame is a handful of numpy operations over
the whole (beam × top-k) block instead of ~500 Python iterations with object creation,
hashing and KenLM calls. Why it stays exact:

* Every candidate a frame can create sits in a (B, 1 + K) slot grid: column 0 is "same
  prefix as beam state i", column 1 + r is "beam state i extended by the r-th best label".
  Row-major order of that grid is the reference's dict insertion order, so a stable sort
  of the flattened grid reproduces its tie-breaking.
* Identical prefixes can only meet in one way: the extension of state j by label l equals
  state k of the beam (k's prefix is j's prefix + l). Prefixes carry canonical integer ids
  (a trie keyed by (parent id, label)), so these merges are found by comparing k's parent
  id with the beam's ids. The merged log-sum-exp is evaluated in the reference's order
  (whichever of j and k comes first in the beam contributes first).
* log-sum-exp is ``np.logaddexp`` throughout (bitwise identical for scalars and arrays;
  ``logaddexp(-inf, x) == x`` exactly), and all scores are float64.
* LM scores come from a memo table (``CharLM``) holding exactly what KenLM returned.

State of a path lives in flat arrays: the beam (≤ beam_size rows), a prefix store (one row
per canonical prefix that ever entered the beam: parent, label and its LM stack node) and a
label store (per-path (label, onset, parent) chains, because merged paths keep the onset of
whichever path created the state first). Both stores are compacted to what the beam still
references once they grow large, so long online sessions run in bounded memory.
"""

from __future__ import annotations

import os
from itertools import repeat

import numpy as np

from emg2qwerty_ssm.charset import CharacterSet
from emg2qwerty_ssm.decoding.base import Decoder
from emg2qwerty_ssm.decoding.beam_store import Store, ancestors
from emg2qwerty_ssm.decoding.lm import CharLM

__all__ = ["CTCBeamDecoder"]

_NO_LABEL = -1  # label of the root rows of the stores
# Rows of the beam arrays: floats (log-probabilities p_b, p_nb and the LM node's log10 score)
_PB, _PNB, _LSC = 0, 1, 2
# ints: canonical prefix id, its parent's id, last label, LM node, LM context, label chain
_PID, _PP, _LAST, _LMN, _CTX, _PATH = 0, 1, 2, 3, 4, 5


#: log-probabilities are <= 0; allow float rounding of log_softmax
_LOG_PROB_TOLERANCE = 1e-4


class CTCBeamDecoder(Decoder):
    """Prefix beam search over CTC emissions with an optional character KenLM.

    Args:
        beam_size: number of prefixes kept after each frame.
        max_labels_per_timestep: only the k best labels of each frame are expanded
            (≤ 0: all 99).
        lm_path: KenLM ``.arpa`` or ``.bin`` character LM, or None for no LM. A path that
            does not exist or does not load is an error (never a silent no-LM fallback).
        lm_weight: multiplies the LM's log10 scores, which are added to natural-log
            emissions unchanged (as emg2qwerty does).
        insertion_bonus: added per non-delete label when an LM is used.
        delete_key: key whose label undoes the previous character's LM contribution
            (None: no delete handling).
        num_workers: default process count for ``decode_batch`` (0 or 1: in-process).

    Online use: ``decode(emissions (T, 99), timestamps (T,), finish=False)`` any number of
    times, then ``reset()``. Feeding a sequence chunk by chunk gives exactly the result of
    one call on the whole sequence.
    """

    # Compact the stores when they exceed this many rows (and twice the live size).
    compact_threshold: int = 200_000

    def __init__(
        self,
        beam_size: int = 50,
        max_labels_per_timestep: int = 10,
        lm_path: str | os.PathLike | None = None,
        lm_weight: float = 2.0,
        insertion_bonus: float = 2.0,
        delete_key: str | None = "Key.backspace",
        num_workers: int = 0,
        _charset: CharacterSet | None = None,
    ) -> None:
        super().__init__(_charset=_charset, num_workers=num_workers)
        if int(beam_size) < 1:
            raise ValueError(f"CTCBeamDecoder: beam_size must be >= 1, got {beam_size!r}")
        self.beam_size = int(beam_size)
        self.max_labels_per_timestep = int(max_labels_per_timestep)
        self.lm_weight = float(lm_weight)
        self.insertion_bonus = float(insertion_bonus)
        self.delete_key = delete_key
        self.delete_label = -2  # matches no label
        if delete_key is not None:
            if delete_key not in self._charset:
                raise ValueError(
                    f"CTCBeamDecoder: delete_key {delete_key!r} is not a charset key name"
                )
            self.delete_label = self._charset.key_to_label(delete_key)
        self.lm_path = None if lm_path in (None, "") else str(lm_path)
        self.lm: CharLM | None = None
        if self.lm_path is not None:
            skip = (self.blank,) + ((self.delete_label,) if delete_key is not None else ())
            self.lm = CharLM(self.lm_path, self._charset, skip_labels=skip)
        k = self.max_labels_per_timestep
        self._k = self.num_classes if k <= 0 else min(k, self.num_classes)
        self.reset()

    def _config(self) -> dict:
        return {
            "beam_size": self.beam_size,
            "max_labels_per_timestep": self.max_labels_per_timestep,
            "lm_path": self.lm_path,
            "lm_weight": self.lm_weight,
            "insertion_bonus": self.insertion_bonus,
            "delete_key": self.delete_key,
        }

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        # Canonical prefixes: parent id, last label, and the LM stack node that a prefix
        # ending in a non-delete label pushes (context id, log10 score, node below it).
        self._prefix = Store(
            parent=np.int64, label=np.int64, ctx=np.int64, score=np.float64, below=np.int64
        )
        root = self._prefix.alloc(1)
        self._prefix.cols["parent"][root] = -1
        self._prefix.cols["label"][root] = _NO_LABEL
        self._prefix.cols["below"][root] = -1
        self._trie: dict[int, int] = {}  # parent id * 128 + label -> prefix id
        # Per-path label chains with onset timestamps (row 0 = the empty path).
        self._path = Store(parent=np.int64, label=np.int64, time=np.float64)
        root = self._path.alloc(1)
        self._path.cols["parent"][root] = -1
        self._path.cols["label"][root] = _NO_LABEL
        self._compact_at = self.compact_threshold
        # The beam, best first: float rows (_PB, _PNB, _LSC) and int rows (_PID .. _PATH).
        self._fl = np.array([[0.0], [-np.inf], [0.0]])
        self._it = np.zeros((6, 1), dtype=np.int64)
        self._it[_PP] = -1
        self._it[_LAST] = self.num_classes  # "no label": never kept, never repeated

    # ------------------------------------------------------------------ decoding
    def _decode(
        self, emissions: np.ndarray, timestamps: np.ndarray, finish: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance the beam over emissions (T, 99) float64; returns the best labels/onsets."""
        t_count = len(emissions)
        if t_count and float(emissions.max()) > _LOG_PROB_TOLERANCE:
            # probabilities (softmax) or raw logits would be scored as if they were logs
            row = int(np.argmax(emissions.max(axis=1)))
            raise ValueError(
                f"CTCBeamDecoder expects log-probabilities (all <= 0), but frame {row} holds "
                f"{float(emissions[row].max()):.4g} (row sum {float(emissions[row].sum()):.4g}): "
                "these look like probabilities or logits; pass log_softmax(logits) instead"
            )
        if t_count:
            k = self._k
            # Stable descending order: ties go to the lower label (the oracle's convention).
            top = np.argsort(-emissions, axis=1, kind="stable")[:, :k]
            top_p = np.take_along_axis(emissions, top, axis=1)
            rank = np.full((t_count, self.num_classes + 1), -1, dtype=np.int64)
            rank[np.arange(t_count)[:, None], top] = np.arange(k)
            times = np.asarray(timestamps, dtype=np.float64).tolist()
            for t in range(t_count):
                self._step(top[t], top_p[t], rank[t], times[t])
                if t & 255 == 255:
                    self._maybe_compact()
            self._maybe_compact()
        if finish:
            self.finish()
        return self._best()

    def _step(self, labels: np.ndarray, p: np.ndarray, rank: np.ndarray, time: float) -> None:
        """One frame. labels/p: (K,) kept labels and their emissions; rank: (100,) label -> r."""
        fl, it = self._fl, self._it
        n, k = fl.shape[1], len(labels)
        width = k + 1
        lm = self.lm
        scores = next_ctx = None
        self._delete_kept = False

        # Extensions of every beam state by every kept label: c[0] from p_b, c[1] from p_nb.
        c = fl[:2, :, None] + p
        if lm is not None:
            scores, next_ctx = lm.lookup(it[_CTX], labels)
            q = scores * self.lm_weight
            q += self.insertion_bonus
            del_r = rank[self.delete_label] if self.delete_label >= 0 else -1
            self._delete_kept = del_r >= 0
            if del_r >= 0:  # a delete undoes the LM term of the character it deletes
                undo = fl[_LSC] * self.lm_weight
                undo += self.insertion_bonus
                np.negative(undo, out=undo)
                undo[it[_LMN] == 0] = 0.0
                q[:, del_r] = undo
            c += q
        cb, cnb = c[0], c[1]
        ext = np.logaddexp(cb, cnb)

        # g: (p_b, p_nb) of every slot; column 0 = same prefix, 1 + r = extension by label r.
        g = np.empty((2, n, width))
        blank_r = rank[self.blank]
        if blank_r >= 0:
            np.logaddexp(fl[_PB] + p[blank_r], fl[_PNB] + p[blank_r], out=g[0, :, 0])
        else:
            g[0, :, 0] = -np.inf
        g[0, :, 1:] = -np.inf
        g[1, :, 0] = -np.inf
        last_r = rank[it[_LAST]]
        coll = np.flatnonzero(last_r >= 0)
        if len(coll):
            # Repeating the last label: p_nb collapses into the same prefix, and only p_b
            # (a blank in between) extends it.
            rc = last_r[coll]
            ext[coll, rc] = cb[coll, rc]
            g[1, coll, 0] = fl[_PNB, coll] + p[rc]
        g[1, :, 1:] = ext
        # Sort key: -p_total; NaN marks slots that hold no state (sorted last).
        neg = np.empty((n, width))
        np.logaddexp(g[0, :, 0], g[1, :, 0], out=neg[:, 0])
        np.negative(neg[:, 0], out=neg[:, 0])
        np.negative(ext, out=neg[:, 1:])
        n_valid = n * width
        if blank_r >= 0:
            neg[:, 1 + blank_r] = np.nan
            n_valid -= n

        hosted: dict[int, int] = {}
        if n > 1 and len(coll):
            n_valid -= self._merge(g, neg, ext, cb, cnb, coll, rc, last_r, width, hosted)

        sel = np.argsort(neg.ravel(), kind="stable")[: min(self.beam_size, n_valid)]
        row, col = np.divmod(sel, width)
        new_fl = np.empty((3, len(sel)))
        new_fl[:2] = g.reshape(2, -1)[:, sel]
        e = np.flatnonzero(col)
        if not len(e):
            new_fl[_LSC] = fl[_LSC, row]
            self._fl, self._it = new_fl, it[:, row]
            return

        # Same-prefix slots copy their row; merged extensions copy the state they merged
        # with (same prefix, same LM node) but keep this path's onset: it was created first.
        src = row
        for slot, kk in hosted.items():
            src = np.where(sel == slot, kk, src)
        new_it = it[:, src]
        new_fl[_LSC] = fl[_LSC, src]
        e_row, e_r = row[e], col[e] - 1
        e_lab = labels[e_r]
        links = self._path.alloc(len(e))
        pcols = self._path.cols
        pcols["parent"][links] = it[_PATH, e_row]
        pcols["label"][links] = e_lab
        pcols["time"][links] = time
        new_it[_PATH, e] = links
        new_it[_PP, e] = it[_PID, e_row]
        new_it[_LAST, e] = e_lab
        if hosted:
            fresh = np.flatnonzero(src[e] == e_row)
            e, e_row, e_r, e_lab = e[fresh], e_row[fresh], e_r[fresh], e_lab[fresh]
        if len(e):
            self._extend(new_it, new_fl, e, e_row, e_r, e_lab, it, next_ctx, scores)
        self._fl, self._it = new_fl, new_it

    def _merge(self, g, neg, ext, cb, cnb, coll, rc, last_r, width, hosted) -> int:
        """Merge extension (j, r) into beam state kk when kk = prefix j + label r.

        Scalar code: a frame has few such pairs (about one with peaky emissions). The
        log-sum-exp order is the reference's: terms from whichever of j, kk comes first
        in the beam are added first. Returns the number of merges.
        """
        logaddexp = np.logaddexp
        pos = {pid: i for i, pid in enumerate(self._it[_PID].tolist())}
        count = 0
        for kk, parent, r in zip(
            coll.tolist(), self._it[_PP, coll].tolist(), rc.tolist(), strict=True
        ):
            j = pos.get(parent)
            if j is None:
                continue
            count += 1
            coll_nb = g[1, kk, 0]
            if j < kk:
                value = logaddexp(ext[j, r], coll_nb)
                pb = g[0, kk, 0]
                g[0, j, 1 + r] = pb
                g[1, j, 1 + r] = value
                neg[j, 1 + r] = -logaddexp(pb, value)
                neg[kk, 0] = np.nan
                hosted[j * width + 1 + r] = kk
            else:
                value = logaddexp(coll_nb, cb[j, r])
                if last_r[j] != r:  # (j, r) is not a repeat: p_nb extends it too
                    value = logaddexp(value, cnb[j, r])
                g[1, kk, 0] = value
                neg[kk, 0] = -logaddexp(g[0, kk, 0], value)
                neg[j, 1 + r] = np.nan
        return count

    def _extend(self, new_it, new_fl, e, e_row, e_r, e_lab, it, next_ctx, scores) -> None:
        """Prefix ids and LM nodes of brand-new extensions (beam row e_row + label e_lab)."""
        parent_ids = it[_PID, e_row]
        keys = (parent_ids * 128 + e_lab).tolist()
        trie = self._trie
        ids = np.array(list(map(trie.get, keys, repeat(-1, len(keys)))), dtype=np.int64)
        created = np.flatnonzero(ids < 0)
        if len(created):
            rows = self._prefix.alloc(len(created))
            ids[created] = rows
            trie.update(zip([keys[i] for i in created.tolist()], rows.tolist(), strict=True))
        new_it[_PID, e] = ids
        if self.lm is None:
            new_it[_LMN, e] = 0
            new_it[_CTX, e] = 0
            new_fl[_LSC, e] = 0.0
            ctx = lsc = None
        else:
            # A non-delete label pushes an LM node (the new prefix itself); a delete pops.
            assert next_ctx is not None and scores is not None
            ctx = next_ctx[e_row, e_r]
            lsc = scores[e_row, e_r]
            lmn = ids
            is_del = e_lab == self.delete_label if self._delete_kept else None
            if is_del is not None and is_del.any():
                prev_lmn = it[_LMN, e_row]
                cols = self._prefix.cols
                popped = np.where(prev_lmn != 0, cols["below"][prev_lmn], 0)
                lmn = np.where(is_del, popped, ids)
                ctx = np.where(is_del, cols["ctx"][popped], ctx)
                lsc = np.where(is_del, cols["score"][popped], lsc)
            new_it[_LMN, e] = lmn
            new_it[_CTX, e] = ctx
            new_fl[_LSC, e] = lsc
        if len(created):
            cols = self._prefix.cols
            cols["parent"][rows] = parent_ids[created]
            cols["label"][rows] = e_lab[created]
            if ctx is not None and lsc is not None:
                cols["ctx"][rows] = ctx[created]
                cols["score"][rows] = lsc[created]
                cols["below"][rows] = it[_LMN, e_row[created]]

    def finish(self) -> None:
        """Add ``lm_weight * log10 P(</s> | context)`` to every prefix not at ``<s>``; re-rank."""
        if self.lm is not None:
            lm, weight = self.lm, self.lm_weight
            add = [0.0 if c == 0 else weight * lm.eos_score(c) for c in self._it[_CTX].tolist()]
            self._fl[:2] += np.asarray(add)
        order = np.argsort(-np.logaddexp(self._fl[_PB], self._fl[_PNB]), kind="stable")
        self._fl, self._it = self._fl[:, order], self._it[:, order]

    @property
    def beam_scores(self) -> np.ndarray:
        """(B,) total log-scores (emissions + LM terms) of the current beam, best first."""
        return np.logaddexp(self._fl[_PB], self._fl[_PNB])

    def _best(self) -> tuple[np.ndarray, np.ndarray]:
        cols = self._path.cols
        parent, label, time = cols["parent"], cols["label"], cols["time"]
        node = int(self._it[_PATH, 0])
        chain = []
        while node > 0:
            chain.append(node)
            node = int(parent[node])
        chain.reverse()
        return label[chain], time[chain]

    # ------------------------------------------------------------------ memory
    def _maybe_compact(self) -> None:
        limit = self._compact_at
        lm_big = self.lm is not None and self.lm.num_contexts > limit
        if self._prefix.size <= limit and self._path.size <= limit and not lm_big:
            return
        self._compact()
        # Next compaction only after the stores have grown well past what is live.
        live = max(self._prefix.size, self._path.size)
        if self.lm is not None:
            live = max(live, self.lm.num_contexts)
        self._compact_at = max(self.compact_threshold, 2 * live)

    def _compact(self) -> None:
        """Drop store rows (and LM contexts) that no beam state can reach any more."""
        it = self._it
        # Label chains.
        size = self._path.size
        live = ancestors(self._path.cols["parent"][:size], it[_PATH])
        remap = np.full(size, -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        self._path.keep(live)
        par = self._path.cols["parent"][: len(live)]
        par[:] = np.where(par >= 0, remap[par], -1)
        it[_PATH] = remap[it[_PATH]]
        # Canonical prefixes: every ancestor of a beam prefix stays (a dropped prefix that
        # comes back must get the same id); LM nodes are ancestors too.
        size = self._prefix.size
        live = ancestors(self._prefix.cols["parent"][:size], it[_PID])
        remap = np.full(size, -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        self._prefix.keep(live)
        cols = self._prefix.cols
        size = len(live)
        for name in ("parent", "below"):
            arr = cols[name][:size]
            arr[:] = np.where(arr >= 0, remap[arr], -1)
        for row in (_PID, _PP, _LMN):
            it[row] = np.where(it[row] >= 0, remap[it[row]], -1)
        par, lab = cols["parent"][1:size], cols["label"][1:size]
        self._trie = dict(zip((par * 128 + lab).tolist(), range(1, size), strict=True))
        if self.lm is not None:
            ctx_map = self.lm.compact(np.concatenate([cols["ctx"][:size], it[_CTX]]))
            cols["ctx"][:size] = ctx_map[cols["ctx"][:size]]
            it[_CTX] = ctx_map[it[_CTX]]
