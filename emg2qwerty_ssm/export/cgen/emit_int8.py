"""Emit the int8 C99 library of an :class:`Int8Plan`.

Integer matrix products (int8 x int8 -> int32) with fixed-point requantisation or float32
scaling, look-up tables for GELU and sigmoid, float32 for the input layer (unless quantised,
see ``quant.py``), LayerNorm, the S4D recurrence and log-softmax. Only IEEE-exact float operations are used (+, -, *, /, sqrtf, floorf, frexpf,
ldexpf) in a fixed order, with exp/log written out below, so the output is bit-identical to
``int8_reference.Int8Reference`` (NumPy) on any IEEE-754 single-precision target built
without FMA contraction (``-ffp-contract=off``).
"""

# ruff: noqa: E501  (the f-strings below are lines of generated C; kept whole to read as C)

from __future__ import annotations

from pathlib import Path

import numpy as np

from emg2qwerty_ssm.export.cgen.csource import (
    LAYERNORM_C,
    SSM_STEP_C,
    CLibrary,
    c_float_array,
    c_int_array,
    write_library,
)
from emg2qwerty_ssm.export.cgen.emit_fp32 import _header
from emg2qwerty_ssm.export.cgen.quant import Int8Plan, QLinear, QParams

KERNELS = (
    r"""
/* int32 accumulators of an int8 matrix product; the bias holds the input zero point. */
static void qmatmul(const int8_t *x, int n_in, const int8_t *w, const int32_t *b, int32_t *acc,
                    int n_out) {
    for (int o = 0; o < n_out; ++o) {
        const int8_t *row = w + (long)o * n_in;
        int32_t a = b[o];
#if defined(__ARM_FEATURE_DSP) && defined(EMG_MODEL_USE_SMLAD)
        int i = 0;
        for (; i + 4 <= n_in; i += 4) {
            uint32_t wv, xv;
            memcpy(&wv, row + i, 4);
            memcpy(&xv, x + i, 4);
            a = (int32_t)__smlad(__sxtb16(wv), __sxtb16(xv), (uint32_t)a);
            a = (int32_t)__smlad(__sxtb16((wv >> 8) | (wv << 24)), __sxtb16((xv >> 8) | (xv << 24)),
                                 (uint32_t)a);
        }
        for (; i < n_in; ++i) a += (int32_t)row[i] * (int32_t)x[i];
#else
        for (int i = 0; i < n_in; ++i) a += (int32_t)row[i] * (int32_t)x[i];
#endif
        acc[o] = a;
    }
}

/* Fixed-point requantisation: round(acc * mult / 2^shift) + zp, saturated to int8 (relies
 * on arithmetic right shift of negative int64, as GCC and Clang do). */
static void requant(const int32_t *acc, int n, const int32_t *mult, const int8_t *shift,
                    const int8_t *zp, int8_t *y) {
    for (int o = 0; o < n; ++o) {
        int64_t v = ((int64_t)acc[o] * mult[o] + ((int64_t)1 << (shift[o] - 1))) >> shift[o];
        v += zp[o];
        y[o] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
    }
}

static void dequant(const int32_t *acc, int n, const float *deq, float *y) {
    for (int o = 0; o < n; ++o) y[o] = (float)acc[o] * deq[o];
}

static void quantize(const float *x, int n, float inv_scale, float zp, int8_t *q) {
    for (int i = 0; i < n; ++i) {
        float v = floorf(x[i] * inv_scale + 0.5f) + zp;
        v = v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v);
        q[i] = (int8_t)v;
    }
}

static void lut8(int8_t *x, int n, const int8_t *lut) {
    for (int i = 0; i < n; ++i) x[i] = lut[x[i] + 128];
}

"""
    + LAYERNORM_C
    + r"""
"""
    + SSM_STEP_C
    + r"""
/* exp(x) for x <= 0 and log(x) for x >= 1 from + - * / only (bit-reproducible). */
static float det_exp(float x) {
    if (x < -80.0f) x = -80.0f;
    float k = floorf(x * 1.44269502f + 0.5f);
    float r = (x - k * 0.693145751953125f) - k * 1.42860677e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return ldexpf(p, (int)k);
}

static float det_log(float x) {
    int e;
    float m = frexpf(x, &e);
    if (m < 0.70710678f) {
        m = m * 2.0f;
        e = e - 1;
    }
    float t = (m - 1.0f) / (m + 1.0f), t2 = t * t;
    float p = 1.0f / 9.0f;
    p = p * t2 + 1.0f / 7.0f;
    p = p * t2 + 1.0f / 5.0f;
    p = p * t2 + 1.0f / 3.0f;
    float t_2 = t * 2.0f;
    float lm = t_2 + t_2 * (p * t2);
    return (float)e * 0.693145751953125f + (lm + (float)e * 1.42860677e-06f);
}

static void log_softmax(const float *x, float *out, int n) {
    float m = x[0], s = 0.0f;
    for (int i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < n; ++i) s += det_exp(x[i] - m);
    float ls = det_log(s);
    for (int i = 0; i < n; ++i) out[i] = (x[i] - m) - ls;
}
"""
)


# The float32 input layer: one accumulator per output, bias first, then the inputs in order
# (the order ``int8_reference.float_linear`` reproduces); only emitted when it is used, as
# -Werror rejects an unused static function.
FLOAT_LINEAR_C = r"""
static void flinear(const float *x, int n_in, const float *w, const float *b, float *y,
                    int n_out) {
    for (int o = 0; o < n_out; ++o) {
        const float *row = w + (long)o * n_in;
        float a = b[o];
        for (int i = 0; i < n_in; ++i) a += row[i] * x[i];
        y[o] = a;
    }
}
"""


class _Emitter:
    def __init__(self) -> None:
        self.consts: list[str] = []

    def qlinear(self, name: str, q: QLinear) -> None:
        self.consts += [
            c_int_array(f"{name}_w", "int8_t", q.weight),
            c_int_array(f"{name}_b", "int32_t", q.bias),
        ]
        if q.deq is not None:
            self.consts.append(c_float_array(f"{name}_deq", q.deq))
        else:
            assert q.mult is not None and q.shift is not None and q.out_zp is not None
            self.consts += [
                c_int_array(f"{name}_mult", "int32_t", q.mult),
                c_int_array(f"{name}_shift", "int8_t", q.shift),
                c_int_array(f"{name}_zp", "int8_t", q.out_zp),
            ]

    def floats(self, name: str, values: np.ndarray) -> None:
        self.consts.append(c_float_array(name, values))


def _qcall(src: str, n: int, q: QParams, dst: str) -> str:
    return f"quantize({src}, {n}, {float(q.inv_scale)!r}f, {float(q.zp)!r}f, {dst});"


def emit_int8(qp: Int8Plan, out_dir: Path) -> CLibrary:
    plan, e = qp.fp, _Emitter()
    scratch: list[str] = []
    body: list[str] = []
    chans = plan.bands * plan.electrodes
    f0, p = plan.enc_frames, plan.input_pool
    enc_f = plan.enc_features
    max_out = max(
        [enc_f, 2 * plan.bb_in.weight.shape[0] if plan.bb_in else 0, plan.num_classes]
        + [lin.weight.shape[0] for band in qp.enc for lin in band]
        + [lin.weight.shape[0] for lin, _, _ in qp.tc]
        + [qp.bb_out.weight.shape[0]]
    )
    float_input = qp.in_q is None
    scratch += [f"float pooled[{chans}];", f"int32_t acc[{max_out}];"]
    scratch += [f"float encf[{enc_f}];", f"int8_t enc[{f0 * enc_f}];"]
    lines = [
        f"    for (int f = 0; f < {f0}; ++f) {{",
        f"        for (int c = 0; c < {chans}; ++c) {{",
        "            float a = 0.0f;",
        f"            for (int j = 0; j < {p}; ++j) a += input[(f * {p} + j) * {chans} + c];",
        f"            S.pooled[c] = a / {float(p)!r}f;",
        "        }",
    ]
    if qp.in_q is not None:
        scratch.append(f"int8_t qin[{chans}];")
        lines.append("        " + _qcall("S.pooled", chans, qp.in_q, "S.qin"))
    offset = 0
    for b, layers in enumerate(qp.enc):
        src = f"S.{'pooled' if float_input else 'qin'} + {b * plan.electrodes}"
        n_in = plan.electrodes
        for j, q in enumerate(layers):
            name, n_out = f"enc{b}_{j}", q.weight.shape[0]
            ln = plan.enc_layers[b][j][1]
            last = j == len(layers) - 1
            dst = f"S.encf + {offset}" if last else f"S.hid{b}_{j}"
            if not last:
                scratch += [f"float hid{b}_{j}[{n_out}];", f"int8_t qhid{b}_{j}[{n_out}];"]
            if isinstance(q, QLinear):
                e.qlinear(name, q)
                lines += [
                    f"        qmatmul({src}, {n_in}, {name}_w, {name}_b, S.acc, {n_out});",
                    f"        dequant(S.acc, {n_out}, {name}_deq, {dst});",
                ]
            else:  # the float32 input layer
                e.floats(f"{name}_w", q.weight)
                e.floats(f"{name}_b", q.bias)
                lines.append(f"        flinear({src}, {n_in}, {name}_w, {name}_b, {dst}, {n_out});")
            if ln is not None:
                e.floats(f"{name}_g", ln.gamma)
                e.floats(f"{name}_beta", ln.beta)
                lines.append(
                    f"        layernorm({dst}, {n_out}, {name}_g, {name}_beta, {ln.eps!r}f);"
                )
            lines.append(
                f"        for (int i = 0; i < {n_out}; ++i) {{ float *v = {dst} + i; "
                "*v = *v > 0.0f ? *v : 0.0f; }"
            )
            if not last:
                nxt = qp.enc[b][j + 1]
                assert isinstance(nxt, QLinear)  # only the input layer stays float
                lines.append("        " + _qcall(dst, n_out, nxt.in_q, f"S.qhid{b}_{j}"))
                src = f"S.qhid{b}_{j}"
            n_in = n_out
        offset += n_in
    lines += ["        " + _qcall("S.encf", enc_f, qp.enc_out_q, f"S.enc + f * {enc_f}"), "    }"]
    body.append("\n".join(lines))
    src, frames, width = "S.enc", f0, enc_f
    for i, (q, lut, k) in enumerate(qp.tc):
        n_out = q.weight.shape[0]
        frames //= k
        e.qlinear(f"tc{i}", q)
        e.consts.append(c_int_array(f"tc{i}_lut", "int8_t", lut))
        scratch.append(f"int8_t tc{i}[{frames * n_out}];")
        body.append(
            f"    for (int t = 0; t < {frames}; ++t) {{\n"
            f"        qmatmul({src} + t * {k * width}, {k * width}, tc{i}_w, tc{i}_b, S.acc, {n_out});\n"
            f"        requant(S.acc, {n_out}, tc{i}_mult, tc{i}_shift, tc{i}_zp, S.tc{i} + t * {n_out});\n"
            f"        lut8(S.tc{i} + t * {n_out}, {n_out}, tc{i}_lut);\n"
            f"    }}"
        )
        src, width = f"S.tc{i}", n_out
    h = qp.bb_in.weight.shape[0]
    e.qlinear("bb_in", qp.bb_in)
    scratch += [
        f"float x[{frames * h}];",
        f"float y[{h}];",
        f"int8_t qy[{h}];",
        f"int8_t qz[{2 * h}];",
    ]
    body.append(
        f"    for (int t = 0; t < {frames}; ++t) {{\n"
        f"        qmatmul({src} + t * {width}, {width}, bb_in_w, bb_in_b, S.acc, {h});\n"
        f"        dequant(S.acc, {h}, bb_in_deq, S.x + t * {h});\n"
        f"    }}"
    )
    modes = plan.blocks[0].a_re.shape[1] if plan.blocks else 1
    state = [f"float ssm[{max(len(plan.blocks), 1)}][{h * modes * 2}];"]
    for i, qb in enumerate(qp.blocks):
        n, blk = f"s4_{i}", qb.fp
        for attr in ("a_re", "a_im", "w_re", "w_im", "d"):
            e.floats(f"{n}_{attr}", getattr(blk, attr))
        e.qlinear(f"{n}_c", qb.out_conv)
        e.consts.append(c_int_array(f"{n}_gelu", "int8_t", qb.gelu_lut))
        e.floats(f"{n}_sig", qb.sig_lut)
        e.floats(f"{n}_g", blk.norm.gamma)
        e.floats(f"{n}_beta", blk.norm.beta)
        fin, pool = blk.frames_in, blk.pool
        code = [
            f"    for (int t = 0; t < {fin}; ++t) {{",
            f"        float *xt = S.x + t * {h};",
            f"        ssm_step(ST.ssm[{i}], {n}_a_re, {n}_a_im, {n}_w_re, {n}_w_im, {n}_d, xt, S.y, {h}, {modes});",
            "        " + _qcall("S.y", h, qb.y_q, "S.qy"),
            f"        lut8(S.qy, {h}, {n}_gelu);",
            f"        qmatmul(S.qy, {h}, {n}_c_w, {n}_c_b, S.acc, {2 * h});",
            f"        requant(S.acc, {2 * h}, {n}_c_mult, {n}_c_shift, {n}_c_zp, S.qz);",
            f"        for (int c = 0; c < {h}; ++c)",
            f"            xt[c] = (float)(S.qz[c] - ({qb.a_q.zp})) * {qb.a_q.scale!r}f * {n}_sig[S.qz[{h} + c] + 128] + xt[c];",
            "    }",
        ]
        if pool > 1:
            code += [
                f"    for (int t = 0; t < {fin // pool}; ++t)",
                f"        for (int c = 0; c < {h}; ++c) {{",
                "            float a = 0.0f;",
                f"            for (int j = 0; j < {pool}; ++j) a += S.x[(t * {pool} + j) * {h} + c];",
                f"            S.x[t * {h} + c] = a / {float(pool)!r}f;",
                "        }",
            ]
        code.append(
            f"    for (int t = 0; t < {fin // pool}; ++t) layernorm(S.x + t * {h}, {h}, {n}_g, {n}_beta, {blk.norm.eps!r}f);"
        )
        body.append("\n".join(code))
    d_out, k = qp.bb_out.weight.shape[0], plan.num_classes
    e.qlinear("bb_out", qp.bb_out)
    e.consts.append(c_int_array("dec_gelu", "int8_t", qp.dec_gelu_lut))
    e.qlinear("cls", qp.classifier)
    scratch += [f"int8_t qdec_in[{h}];", f"int8_t qdec[{d_out}];", f"float logits[{k}];"]
    body.append(
        "    " + _qcall("S.x", h, qp.dec_in_q, "S.qdec_in") + "\n"
        f"    qmatmul(S.qdec_in, {h}, bb_out_w, bb_out_b, S.acc, {d_out});\n"
        f"    requant(S.acc, {d_out}, bb_out_mult, bb_out_shift, bb_out_zp, S.qdec);\n"
        f"    lut8(S.qdec, {d_out}, dec_gelu);\n"
        f"    qmatmul(S.qdec, {d_out}, cls_w, cls_b, S.acc, {k});\n"
        f"    dequant(S.acc, {k}, cls_deq, S.logits);\n"
        f"    log_softmax(S.logits, log_probs, {k});"
    )
    nl = "\n    "
    source = (
        f"/* Generated int8 streaming step of {plan.name!r}; see emg_model.h. */\n"
        '#include "emg_model.h"\n#include <math.h>\n#include <stdint.h>\n#include <string.h>\n'
        "#if defined(__ARM_FEATURE_DSP) && defined(EMG_MODEL_USE_SMLAD)\n#include <arm_acle.h>\n#endif\n\n"
        + "".join(e.consts)
        + f"\n/* Recurrent state (cleared by emg_model_reset). */\nstatic struct {{\n    {nl.join(state)}\n}} ST;\n"
        + f"\n/* Per-step scratch buffers (static: no heap, small stack). */\nstatic struct {{\n    {nl.join(scratch)}\n}} S;\n"
        + KERNELS
        + (FLOAT_LINEAR_C if float_input else "")
        + "\nvoid emg_model_reset(void) { memset(&ST, 0, sizeof ST); }\n\n"
        + "void emg_model_step(const float *input, float *log_probs) {\n"
        + "\n".join(body)
        + "\n}\n"
    )
    return write_library(out_dir, _header(plan, "int8", 1), source)
