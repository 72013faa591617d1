"""Emit the fp32 C99 library of a :class:`FloatPlan` (libm's erff/expf/logf for GELU, GLU and
log-softmax; every other operation is a plain float multiply-add)."""

# ruff: noqa: E501  (the f-strings below are lines of generated C; kept whole to read as C)

from __future__ import annotations

from pathlib import Path

from emg2qwerty_ssm.export.cgen.csource import HEADER, CLibrary, c_float_array, write_library
from emg2qwerty_ssm.export.cgen.plan import FloatPlan

KERNELS = r"""
static void linear(const float *x, int n_in, const float *w, const float *b, float *y,
                   int n_out) {
    for (int o = 0; o < n_out; ++o) {
        const float *row = w + (long)o * n_in;
        float acc = b[o];
        for (int i = 0; i < n_in; ++i) acc += row[i] * x[i];
        y[o] = acc;
    }
}

static void layernorm(float *x, int n, const float *g, const float *b, float eps) {
    float mean = 0.0f, var = 0.0f;
    for (int i = 0; i < n; ++i) mean += x[i];
    mean = mean / (float)n;
    for (int i = 0; i < n; ++i) {
        float d = x[i] - mean;
        var += d * d;
    }
    var = var / (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    for (int i = 0; i < n; ++i) x[i] = (x[i] - mean) * inv * g[i] + b[i];
}

static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* S4D recurrence in real arithmetic: s <- A s + W u per mode, y = Re(sum_m s) + D u. */
static void ssm_step(float *s, const float *ar, const float *ai, const float *wr,
                     const float *wi, const float *d, const float *u, float *y, int h_dim,
                     int modes) {
    for (int h = 0; h < h_dim; ++h) {
        float acc = 0.0f, uh = u[h];
        float *sh = s + 2 * h * modes;
        const int base = h * modes;
        for (int m = 0; m < modes; ++m) {
            float sr = sh[2 * m], si = sh[2 * m + 1];
            float nr = ar[base + m] * sr - ai[base + m] * si + wr[base + m] * uh;
            float ni = ar[base + m] * si + ai[base + m] * sr + wi[base + m] * uh;
            sh[2 * m] = nr;
            sh[2 * m + 1] = ni;
            acc += nr;
        }
        y[h] = acc + d[h] * uh;
    }
}

static void log_softmax(const float *x, float *out, int n) {
    float m = x[0], s = 0.0f;
    for (int i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
    for (int i = 0; i < n; ++i) s += expf(x[i] - m);
    float ls = logf(s);
    for (int i = 0; i < n; ++i) out[i] = (x[i] - m) - ls;
}
"""


def emit_fp32(plan: FloatPlan, out_dir: Path) -> CLibrary:
    assert plan.bb_in and plan.bb_out and plan.classifier
    consts: list[str] = []
    scratch: list[str] = []
    body: list[str] = []
    chans = plan.bands * plan.electrodes
    f0, p = plan.enc_frames, plan.input_pool
    scratch.append(f"float pooled[{f0 * chans}];")
    body.append(
        f"    for (int f = 0; f < {f0}; ++f)\n"
        f"        for (int c = 0; c < {chans}; ++c) {{\n"
        f"            float acc = 0.0f;\n"
        f"            for (int j = 0; j < {p}; ++j) acc += input[(f * {p} + j) * {chans} + c];\n"
        f"            S.pooled[f * {chans} + c] = acc / {float(p)!r}f;\n"
        f"        }}"
    )
    enc_f = plan.enc_features
    scratch.append(f"float enc[{f0 * enc_f}];")
    offset = 0
    for b, layers in enumerate(plan.enc_layers):
        src, n_in = f"S.pooled + f * {chans} + {b * plan.electrodes}", plan.electrodes
        lines = [f"    for (int f = 0; f < {f0}; ++f) {{"]
        for j, (lin, ln) in enumerate(layers):
            n_out = lin.shape[0]
            name = f"enc{b}_{j}"
            consts += [c_float_array(f"{name}_w", lin.weight), c_float_array(f"{name}_b", lin.bias)]
            last = j == len(layers) - 1
            dst = f"S.enc + f * {enc_f} + {offset}" if last else f"S.hid{b}_{j}"
            if not last:
                scratch.append(f"float hid{b}_{j}[{n_out}];")
            lines.append(f"        linear({src}, {n_in}, {name}_w, {name}_b, {dst}, {n_out});")
            if ln is not None:
                consts += [
                    c_float_array(f"{name}_g", ln.gamma),
                    c_float_array(f"{name}_beta", ln.beta),
                ]
                lines.append(
                    f"        layernorm({dst}, {n_out}, {name}_g, {name}_beta, {ln.eps!r}f);"
                )
            lines.append(
                f"        for (int i = 0; i < {n_out}; ++i) {{ float *v = {dst} + i; *v = *v > 0.0f ? *v : 0.0f; }}"
            )
            src, n_in = dst, n_out
        offset += n_in
        lines.append("    }")
        body.append("\n".join(lines))
    src, frames, width = "S.enc", f0, enc_f
    for i, (lin, k) in enumerate(plan.tc_layers):
        n_out = lin.shape[0]
        frames //= k
        consts += [c_float_array(f"tc{i}_w", lin.weight), c_float_array(f"tc{i}_b", lin.bias)]
        scratch.append(f"float tc{i}[{frames * n_out}];")
        body.append(
            f"    for (int t = 0; t < {frames}; ++t) {{\n"
            f"        linear({src} + t * {k * width}, {k * width}, tc{i}_w, tc{i}_b, S.tc{i} + t * {n_out}, {n_out});\n"
            f"        for (int o = 0; o < {n_out}; ++o) S.tc{i}[t * {n_out} + o] = gelu(S.tc{i}[t * {n_out} + o]);\n"
            f"    }}"
        )
        src, width = f"S.tc{i}", n_out
    h = plan.bb_in.shape[0]
    consts += [
        c_float_array("bb_in_w", plan.bb_in.weight),
        c_float_array("bb_in_b", plan.bb_in.bias),
    ]
    scratch += [f"float x[{frames * h}];", f"float y[{h}];", f"float z[{2 * h}];"]
    body.append(
        f"    for (int t = 0; t < {frames}; ++t)\n"
        f"        linear({src} + t * {width}, {width}, bb_in_w, bb_in_b, S.x + t * {h}, {h});"
    )
    modes = plan.blocks[0].a_re.shape[1] if plan.blocks else 1
    state = [f"float ssm[{max(len(plan.blocks), 1)}][{h * modes * 2}];"]
    for i, blk in enumerate(plan.blocks):
        n = f"s4_{i}"
        for attr in ("a_re", "a_im", "w_re", "w_im", "d"):
            consts.append(c_float_array(f"{n}_{attr}", getattr(blk, attr)))
        consts += [
            c_float_array(f"{n}_cw", blk.out_conv.weight),
            c_float_array(f"{n}_cb", blk.out_conv.bias),
            c_float_array(f"{n}_g", blk.norm.gamma),
            c_float_array(f"{n}_beta", blk.norm.beta),
        ]
        fin, pool = blk.frames_in, blk.pool
        code = [
            f"    for (int t = 0; t < {fin}; ++t) {{",
            f"        float *xt = S.x + t * {h};",
            f"        ssm_step(ST.ssm[{i}], {n}_a_re, {n}_a_im, {n}_w_re, {n}_w_im, {n}_d, xt, S.y, {h}, {modes});",
            f"        for (int c = 0; c < {h}; ++c) S.y[c] = gelu(S.y[c]);",
            f"        linear(S.y, {h}, {n}_cw, {n}_cb, S.z, {2 * h});",
            f"        for (int c = 0; c < {h}; ++c) xt[c] = S.z[c] * sigmoid(S.z[{h} + c]) + xt[c];",
            "    }",
        ]
        if pool > 1:
            code += [
                f"    for (int t = 0; t < {fin // pool}; ++t)",
                f"        for (int c = 0; c < {h}; ++c) {{",
                "            float acc = 0.0f;",
                f"            for (int j = 0; j < {pool}; ++j) acc += S.x[(t * {pool} + j) * {h} + c];",
                f"            S.x[t * {h} + c] = acc / {float(pool)!r}f;",
                "        }",
            ]
        code.append(
            f"    for (int t = 0; t < {fin // pool}; ++t) layernorm(S.x + t * {h}, {h}, {n}_g, {n}_beta, {blk.norm.eps!r}f);"
        )
        body.append("\n".join(code))
    d_out, k = plan.bb_out.shape[0], plan.num_classes
    consts += [
        c_float_array("bb_out_w", plan.bb_out.weight),
        c_float_array("bb_out_b", plan.bb_out.bias),
        c_float_array("cls_w", plan.classifier.weight),
        c_float_array("cls_b", plan.classifier.bias),
    ]
    scratch += [f"float dec[{d_out}];", f"float logits[{k}];"]
    body.append(
        f"    linear(S.x, {h}, bb_out_w, bb_out_b, S.dec, {d_out});\n"
        f"    for (int c = 0; c < {d_out}; ++c) S.dec[c] = gelu(S.dec[c]);\n"
        f"    linear(S.dec, {d_out}, cls_w, cls_b, S.logits, {k});\n"
        f"    log_softmax(S.logits, log_probs, {k});"
    )
    return write_library(
        out_dir, _header(plan, "fp32", 0), _source(plan, consts, state, scratch, body)
    )


def _header(plan: FloatPlan, precision: str, is_int8: int) -> str:
    return HEADER.format(
        name=plan.name,
        precision=precision,
        stride=plan.stride,
        bands=plan.bands,
        electrodes=plan.electrodes,
        classes=plan.num_classes,
        is_int8=is_int8,
    )


def _source(
    plan: FloatPlan, consts: list[str], state: list[str], scratch: list[str], body: list[str]
) -> str:
    nl = "\n    "
    return (
        f"/* Generated fp32 streaming step of {plan.name!r}; see emg_model.h. */\n"
        '#include "emg_model.h"\n#include <math.h>\n#include <string.h>\n\n'
        + "".join(consts)
        + f"\n/* Recurrent state (cleared by emg_model_reset). */\nstatic struct {{\n    {nl.join(state)}\n}} ST;\n"
        + f"\n/* Per-step scratch buffers (static: no heap, small stack). */\nstatic struct {{\n    {nl.join(scratch)}\n}} S;\n"
        + KERNELS
        + "\nvoid emg_model_reset(void) { memset(&ST, 0, sizeof ST); }\n\n"
        + "void emg_model_step(const float *input, float *log_probs) {\n"
        + "\n".join(body)
        + "\n}\n"
    )
