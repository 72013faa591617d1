"""Post-training static int8 quantisation of a :class:`FloatPlan` for the C generator.

Scheme (the same numbers drive the C code and the NumPy reference in ``int8_reference``):

* weights: per-output-channel symmetric int8, ``scale = max|w| / 127``;
* activations entering a matrix product: per-tensor asymmetric int8 (scale, zero point) from
  the min/max seen on the calibration data; the zero point is folded into the int32 bias;
* products accumulate in int32; the result is either requantised to int8 with a fixed-point
  multiplier (int32 mantissa, right shift with rounding; TFLite's scheme) when an int8 op
  follows (GELU look-up table, next matrix product), or scaled to float32 when float math
  follows (LayerNorm, the S4D recurrence, log-softmax);
* GELU becomes a 256-entry int8 -> int8 table, the GLU's sigmoid an int8 -> float32 table;
* the input layer (each band's first encoder Linear, fed by the mean-pooled raw window) stays
  float32 by default (``quantize_input_layer=False``, as in the ONNX int8 export): raw EMG is
  heavy-tailed (std 5-6, extremes beyond +-200), so one per-tensor int8 range has a step of
  about a quarter of a standard deviation and costs several CER points; the first
  re-quantisation point is then the input of the encoder's next product (or its output);
* the S4D recurrence, LayerNorm, residual stream and log-softmax stay float32: the state and
  ``Ā`` are the parts published work finds most sensitive to 8 bits, the Cortex-M4F has a
  single-precision FPU, and these are O(H·modes) per frame against O(H²) for the products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from emg2qwerty_ssm.export.cgen.plan import FloatPlan, Linear, S4DBlock

F32 = np.float32


@dataclass
class QParams:
    """Affine int8 quantisation ``q = clamp(floor(x / scale + 0.5) + zp)``."""

    scale: float  # a float32 value
    zp: int

    @property
    def inv_scale(self) -> np.float32:
        return F32(1.0 / self.scale)

    @classmethod
    def from_range(cls, lo: float, hi: float) -> QParams:
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        scale = float(F32(max(hi - lo, 1e-8) / 255.0))
        zp = int(np.clip(round(-128.0 - lo / scale), -128, 127))
        return cls(scale, zp)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float64) - self.zp) * self.scale


@dataclass
class QLinear:
    """int8 ``weight (out, in)``, int32 ``bias`` (input zero point folded in), input quant
    ``in_q``; output either requantised (``mult``, ``shift``, ``out_zp`` per channel) or
    dequantised (``deq`` per channel: ``y = float(acc) * deq``)."""

    weight: np.ndarray
    bias: np.ndarray
    in_q: QParams
    mult: np.ndarray | None = None
    shift: np.ndarray | None = None
    out_zp: np.ndarray | None = None
    deq: np.ndarray | None = None


@dataclass
class QBlock:
    fp: S4DBlock
    y_q: QParams  # SSM output before GELU
    gelu_lut: np.ndarray  # int8 (256,) y_q -> out_conv.in_q
    out_conv: QLinear  # requantised: first half with a_q, second half with b_q
    a_q: QParams
    sig_lut: np.ndarray  # float32 (256,) sigmoid of the b half


@dataclass
class Int8Plan:
    fp: FloatPlan
    in_q: QParams | None  # pooled raw input; None: the input layer stays float32
    # [band][layer], dequantised, then LayerNorm + ReLU in float; layer 0 is the float32
    # ``Linear`` itself when the input layer is not quantised (``in_q is None``)
    enc: list[list[QLinear | Linear]]
    enc_out_q: QParams
    tc: list[tuple[QLinear, np.ndarray, int]]  # (requantised conv, GELU LUT, kernel)
    bb_in: QLinear  # dequantised
    blocks: list[QBlock]
    dec_in_q: QParams
    bb_out: QLinear  # requantised
    dec_gelu_lut: np.ndarray
    classifier: QLinear  # dequantised


def _gelu(x: np.ndarray) -> np.ndarray:
    return F.gelu(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def _qweights(lin: Linear) -> tuple[np.ndarray, np.ndarray]:
    w = lin.weight.astype(np.float64)
    scale = np.abs(w).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8), scale


def quantize_linear(
    lin: Linear, in_q: QParams, out_q: list[QParams] | QParams | None = None
) -> QLinear:
    """Quantise ``lin``; ``out_q`` None: dequantised output, else requantised (per channel)."""
    qw, s_w = _qweights(lin)
    s_acc = in_q.scale * s_w  # float64 scale of the int32 accumulator
    bias = np.round(lin.bias.astype(np.float64) / s_acc) - in_q.zp * qw.astype(np.int64).sum(1)
    if np.abs(bias).max(initial=0) >= 2**31:
        raise ValueError("int8 quantisation: a bias does not fit int32 (calibration range?)")
    q = QLinear(qw, bias.astype(np.int32), in_q)
    if out_q is None:
        q.deq = s_acc.astype(np.float32)
        return q
    outs = [out_q] * len(s_w) if isinstance(out_q, QParams) else out_q
    real = s_acc / np.array([o.scale for o in outs])
    mant, exp = np.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    mult = np.round(mant * 2.0**31).astype(np.int64)
    exp = np.where(mult == 2**31, exp + 1, exp)
    mult = np.where(mult == 2**31, 2**30, mult)
    shift = 31 - exp
    tiny = shift > 62  # multiplier below 2**-32: the output is the zero point
    mult, shift = np.where(tiny, 0, mult), np.clip(shift, 1, 62)
    q.mult, q.shift = mult.astype(np.int32), shift.astype(np.int32)
    q.out_zp = np.array([o.zp for o in outs], dtype=np.int32)
    return q


def gelu_lut(in_q: QParams, out_q: QParams) -> np.ndarray:
    x = in_q.dequantize(np.arange(-128, 128))
    return np.clip(np.floor(_gelu(x) / out_q.scale + 0.5) + out_q.zp, -128, 127).astype(np.int8)


def sigmoid_lut(in_q: QParams) -> np.ndarray:
    x = in_q.dequantize(np.arange(-128, 128))
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _layernorm(x: np.ndarray, ln) -> np.ndarray:  # noqa: ANN001
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + ln.eps) * ln.gamma + ln.beta


def calibration_ranges(plan: FloatPlan, emg: np.ndarray) -> dict[str, tuple[float, float]]:
    """Min/max of every tensor that gets quantised, from a float64 offline pass over ``emg
    (T, bands, electrodes)`` (several output frames long)."""
    assert plan.bb_in and plan.bb_out
    steps = emg.shape[0] // plan.stride
    if steps < 1:
        raise ValueError(
            f"calibration data has {emg.shape[0]} samples, fewer than one step ({plan.stride})"
        )
    x = emg[: steps * plan.stride].astype(np.float64)
    p = plan.input_pool
    pooled = x.reshape(-1, p, plan.bands, plan.electrodes).mean(1)  # (n, B, E)
    r: dict[str, np.ndarray] = {"in": pooled}
    feats = []
    for b, layers in enumerate(plan.enc_layers):
        h = pooled[:, b]
        for j, (lin, ln) in enumerate(layers):
            if j > 0:
                r[f"enc{b}_{j}_in"] = h
            h = h @ lin.weight.T.astype(np.float64) + lin.bias
            h = np.maximum(_layernorm(h, ln) if ln is not None else h, 0.0)
        feats.append(h)
    h = np.concatenate(feats, -1)
    r["enc_out"] = h
    for i, (lin, k) in enumerate(plan.tc_layers):
        h = h.reshape(h.shape[0] // k, -1) @ lin.weight.T.astype(np.float64) + lin.bias
        r[f"tc{i}_pre"] = h
        h = _gelu(h)
        r[f"tc{i}_post"] = h
    h = h @ plan.bb_in.weight.T.astype(np.float64) + plan.bb_in.bias
    for i, blk in enumerate(plan.blocks):
        a_bar = blk.a_re + 1j * blk.a_im.astype(np.float64)
        w = blk.w_re + 1j * blk.w_im.astype(np.float64)
        s = np.zeros(a_bar.shape, dtype=np.complex128)
        y = np.empty_like(h)
        for t in range(h.shape[0]):
            s = a_bar * s + w * h[t][:, None]
            y[t] = s.real.sum(-1) + blk.d * h[t]
        r[f"s4{i}_y"] = y
        g = _gelu(y)
        r[f"s4{i}_g"] = g
        z = g @ blk.out_conv.weight.T.astype(np.float64) + blk.out_conv.bias
        hd = z.shape[1] // 2
        r[f"s4{i}_a"], r[f"s4{i}_b"] = z[:, :hd], z[:, hd:]
        h = z[:, :hd] / (1.0 + np.exp(-z[:, hd:])) + h
        if blk.pool > 1:
            n = h.shape[0] // blk.pool
            h = h[: n * blk.pool].reshape(n, blk.pool, -1).mean(1)
        h = _layernorm(h, blk.norm)
    r["dec_in"] = h
    h = h @ plan.bb_out.weight.T.astype(np.float64) + plan.bb_out.bias
    r["dec_pre"] = h
    r["dec_post"] = _gelu(h)
    return {k: (float(v.min()), float(v.max())) for k, v in r.items()}


def quantize_plan(
    plan: FloatPlan, calibration_emg: np.ndarray, quantize_input_layer: bool = False
) -> Int8Plan:
    """Calibrate on ``calibration_emg (T, bands, electrodes)`` and quantise ``plan``.

    ``quantize_input_layer``: int8 also on the encoder's first Linear (the products fed by
    the pooled raw window); by default it stays float32 (see the module docstring)."""
    assert plan.bb_in and plan.bb_out and plan.classifier
    rng = calibration_ranges(plan, calibration_emg)
    q = {k: QParams.from_range(*v) for k, v in rng.items()}
    enc: list[list[QLinear | Linear]] = []
    for b, layers in enumerate(plan.enc_layers):
        enc.append(
            [
                quantize_linear(lin, q["in"] if j == 0 else q[f"enc{b}_{j}_in"])
                if j > 0 or quantize_input_layer
                else lin
                for j, (lin, _) in enumerate(layers)
            ]
        )
    tc, prev = [], q["enc_out"]
    for i, (lin, k) in enumerate(plan.tc_layers):
        pre, post = q[f"tc{i}_pre"], q[f"tc{i}_post"]
        tc.append((quantize_linear(lin, prev, pre), gelu_lut(pre, post), k))
        prev = post
    bb_in = quantize_linear(plan.bb_in, prev)
    blocks = []
    for i, blk in enumerate(plan.blocks):
        y_q, g_q, a_q, b_q = (q[f"s4{i}_{n}"] for n in "ygab")
        hd = blk.out_conv.shape[0] // 2
        conv = quantize_linear(blk.out_conv, g_q, [a_q] * hd + [b_q] * hd)
        blocks.append(QBlock(blk, y_q, gelu_lut(y_q, g_q), conv, a_q, sigmoid_lut(b_q)))
    dec_pre, dec_post = q["dec_pre"], q["dec_post"]
    return Int8Plan(
        fp=plan,
        in_q=q["in"] if quantize_input_layer else None,
        enc=enc,
        enc_out_q=q["enc_out"],
        tc=tc,
        bb_in=bb_in,
        blocks=blocks,
        dec_in_q=q["dec_in"],
        bb_out=quantize_linear(plan.bb_out, q["dec_in"], dec_pre),
        dec_gelu_lut=gelu_lut(dec_pre, dec_post),
        classifier=quantize_linear(plan.classifier, dec_post),
    )
