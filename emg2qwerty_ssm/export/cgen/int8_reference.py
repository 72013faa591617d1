"""NumPy integer reference of the generated int8 C step (the bit-exactness oracle).

It mirrors ``emit_int8`` operation by operation: int8 x int8 products summed exactly in int64
(the C code's int32 never overflows for these sizes), the same fixed-point requantisation, the
same look-up tables, and float32 arithmetic in the C code's order. Sequential float sums use
``np.cumsum`` (strictly left to right) instead of ``np.sum`` (pairwise). The S4D recurrence is
float32, as in C (see ``quant.py`` for why). A float32 input layer (the default) is computed
as C's ``flinear`` does: bias first, then each product ``w * x`` rounded to float32 and added
in input order; NumPy float32 ``*`` and ``+`` round like C's under ``-ffp-contract=off`` (no
fused multiply-add), so this part is bit-exact too.

``Int8Reference(plan).run(steps)`` streams ``steps (n, stride * bands * electrodes)`` and returns
``(n, num_classes)`` float32 log-probabilities.
"""

from __future__ import annotations

import numpy as np

from emg2qwerty_ssm.export.cgen.plan import LayerNorm, Linear
from emg2qwerty_ssm.export.cgen.quant import Int8Plan, QLinear, QParams

F32 = np.float32


def _seqsum(x: np.ndarray) -> np.ndarray:
    """Left-to-right float32 sum over the last axis (C's ``for`` loop order)."""
    return np.cumsum(x, axis=-1, dtype=np.float32)[..., -1]


def quantize(x: np.ndarray, q: QParams) -> np.ndarray:
    v = np.floor(x.astype(F32) * q.inv_scale + F32(0.5)) + F32(q.zp)
    return np.clip(v, F32(-128), F32(127)).astype(np.int8)


def qmatmul(x: np.ndarray, q: QLinear) -> np.ndarray:
    acc = q.weight.astype(np.int64) @ x.astype(np.int64) + q.bias
    assert np.abs(acc).max() < 2**31, "int32 accumulator overflow"
    return acc


def requant(acc: np.ndarray, q: QLinear) -> np.ndarray:
    assert q.mult is not None and q.shift is not None and q.out_zp is not None
    shift = q.shift.astype(np.int64)
    v = (acc * q.mult.astype(np.int64) + (np.int64(1) << (shift - 1))) >> shift
    return np.clip(v + q.out_zp, -128, 127).astype(np.int8)


def float_linear(x: np.ndarray, lin: Linear) -> np.ndarray:
    """``x (frames, in)`` float32 -> ``(frames, out)``, summed in C's ``flinear`` order."""
    acc = np.broadcast_to(lin.bias, (x.shape[0], lin.bias.shape[0])).astype(F32)
    for i in range(x.shape[1]):
        acc = acc + lin.weight[:, i][None, :] * x[:, i : i + 1]
    return acc


def dequant(acc: np.ndarray, q: QLinear) -> np.ndarray:
    assert q.deq is not None
    return acc.astype(F32) * q.deq


def lut8(x: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[x.astype(np.int64) + 128]


def layernorm(x: np.ndarray, ln: LayerNorm) -> np.ndarray:
    n = F32(x.shape[-1])
    mean = _seqsum(x) / n
    d = x - mean
    var = _seqsum(d * d) / n
    inv = F32(1.0) / np.sqrt(var + F32(ln.eps))
    return (d * inv) * ln.gamma + ln.beta


def det_exp(x: np.ndarray) -> np.ndarray:
    x = np.maximum(x.astype(F32), F32(-80.0))
    k = np.floor(x * F32(1.44269502) + F32(0.5))
    r = (x - k * F32(0.693145751953125)) - k * F32(1.42860677e-06)
    p = F32(1.0) / F32(720.0)
    for c in (F32(1.0) / F32(120.0), F32(1.0) / F32(24.0), F32(1.0) / F32(6.0)):
        p = p * r + c
    p = p * r + F32(0.5)
    p = p * r + F32(1.0)
    p = p * r + F32(1.0)
    return np.ldexp(p, k.astype(np.int32)).astype(F32)


def det_log(x: np.floating | np.ndarray) -> np.float32:
    m, e = np.frexp(F32(x))
    m, e = F32(m), int(e)
    if m < F32(0.70710678):
        m, e = m * F32(2.0), e - 1
    t = (m - F32(1.0)) / (m + F32(1.0))
    t2 = t * t
    p = F32(1.0) / F32(9.0)
    for c in (F32(1.0) / F32(7.0), F32(1.0) / F32(5.0), F32(1.0) / F32(3.0)):
        p = p * t2 + c
    t_2 = t * F32(2.0)
    lm = t_2 + t_2 * (p * t2)
    return F32(F32(e) * F32(0.693145751953125) + (lm + F32(e) * F32(1.42860677e-06)))


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max()
    s = _seqsum(det_exp(x - m))
    return (x - m) - det_log(s)


class Int8Reference:
    """Stateful streaming reference of the int8 C library."""

    def __init__(self, plan: Int8Plan) -> None:
        self.plan = plan
        self.reset()

    def reset(self) -> None:
        h = self.plan.bb_in.weight.shape[0]
        self.state = [
            (np.zeros((h, b.fp.a_re.shape[1]), F32), np.zeros((h, b.fp.a_re.shape[1]), F32))
            for b in self.plan.blocks
        ]

    def run(self, steps: np.ndarray) -> np.ndarray:
        return np.stack([self.step(s) for s in np.asarray(steps, dtype=F32)])

    def step(self, raw: np.ndarray) -> np.ndarray:
        qp, fp = self.plan, self.plan.fp
        chans = fp.bands * fp.electrodes
        p = fp.input_pool
        x = raw.astype(F32).reshape(fp.enc_frames, p, chans)
        pooled = np.cumsum(x, axis=1, dtype=F32)[:, -1] / F32(p)  # (frames, chans)
        e = fp.electrodes
        first = [  # the float32 input layer, all frames at once: (frames, out) per band
            float_linear(pooled[:, b * e : (b + 1) * e], layers[0])
            for b, layers in enumerate(qp.enc)
            if isinstance(layers[0], Linear)
        ]
        enc = []
        for f in range(fp.enc_frames):
            qin = pooled[f] if qp.in_q is None else quantize(pooled[f], qp.in_q)
            feats = []
            for b, layers in enumerate(qp.enc):
                h = qin[b * e : (b + 1) * e]
                for j, q in enumerate(layers):
                    v = dequant(qmatmul(h, q), q) if isinstance(q, QLinear) else first[b][f]
                    ln = fp.enc_layers[b][j][1]
                    if ln is not None:
                        v = layernorm(v, ln)
                    v = np.maximum(v, F32(0.0))
                    if j + 1 < len(layers):
                        nxt = layers[j + 1]
                        assert isinstance(nxt, QLinear)  # only the input layer stays float
                        h = quantize(v, nxt.in_q)
                    else:
                        h = v
                feats.append(h)
            enc.append(quantize(np.concatenate(feats), qp.enc_out_q))
        h8 = np.stack(enc)  # (frames, features) int8
        for q, lut, k in qp.tc:
            windows = h8.reshape(h8.shape[0] // k, -1)
            h8 = np.stack([lut8(requant(qmatmul(w, q), q), lut) for w in windows])
        x = np.stack([dequant(qmatmul(w, qp.bb_in), qp.bb_in) for w in h8])  # (frames, H)
        for qb, (sr, si) in zip(qp.blocks, self.state, strict=True):
            blk = qb.fp
            for t in range(blk.frames_in):
                u = x[t][:, None]
                nr = (blk.a_re * sr - blk.a_im * si) + blk.w_re * u
                ni = (blk.a_re * si + blk.a_im * sr) + blk.w_im * u
                sr[...], si[...] = nr, ni
                y = _seqsum(nr) + blk.d * x[t]
                g = lut8(quantize(y, qb.y_q), qb.gelu_lut)
                z = requant(qmatmul(g, qb.out_conv), qb.out_conv)
                hd = z.shape[0] // 2
                a = (z[:hd].astype(np.int32) - qb.a_q.zp).astype(F32) * F32(qb.a_q.scale)
                x[t] = a * qb.sig_lut[z[hd:].astype(np.int64) + 128] + x[t]
            n = blk.frames_in // blk.pool
            if blk.pool > 1:
                grouped = x[: n * blk.pool].reshape(n, blk.pool, -1)
                x = np.cumsum(grouped, axis=1, dtype=F32)[:, -1] / F32(blk.pool)
            x = np.stack([layernorm(x[t], blk.norm) for t in range(n)])
        dec = quantize(x[0], qp.dec_in_q)
        dec = lut8(requant(qmatmul(dec, qp.bb_out), qp.bb_out), qp.dec_gelu_lut)
        logits = dequant(qmatmul(dec, qp.classifier), qp.classifier)
        return log_softmax(logits)
