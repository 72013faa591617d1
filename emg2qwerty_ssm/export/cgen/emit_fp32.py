"""Emit the fp32 C99 library of a :class:`FloatPlan` (libm's erff/expf/logf for GELU, GLU and
log-softmax; every other operation is a plain float multiply-add).

Two layouts of the same maths, chosen by ``vector_width``:

* ``1`` (microcontrollers, the default of ``export_c``): row-major weights, one accumulator
  per output, the S4D state as interleaved (re, im) pairs per channel.
* ``> 1`` (SIMD hosts, the compiled streaming engine ``export/host_engine.py``): weights in
  panels of ``vector_width`` outputs ``(ceil(out / P), in, P)`` (zero-padded) so that the
  inner loop updates ``P`` independent accumulators (one SIMD multiply-add, no reduction to
  reorder), and the S4D tables and state mode-major ``(modes, H)`` so the recurrence runs
  across channels. Every output keeps the same summation order as the scalar layout (bias,
  then inputs in order; modes in order), so both give the same floats under
  ``-ffp-contract=off``. The library also exports ``emg_model_state`` /
  ``emg_model_state_bytes`` so a host can save and restore the recurrent state.
"""

# ruff: noqa: E501  (the f-strings below are lines of generated C; kept whole to read as C)

from __future__ import annotations

from pathlib import Path

import numpy as np

from emg2qwerty_ssm.export.cgen.csource import (
    HEADER,
    LAYERNORM_C,
    LOG_SOFTMAX_C,
    SSM_STEP_C,
    CLibrary,
    c_float_array,
    write_library,
)
from emg2qwerty_ssm.export.cgen.plan import FloatPlan, Linear
from emg2qwerty_ssm.export.cgen.simd_kernels import (
    INLINE_ACTIVATIONS,
    LIBM_ACTIVATIONS,
    VECTOR_KERNELS,
)

KERNELS = (
    r"""
static void linear(const float *x, int n_in, const float *w, const float *b, float *y,
                   int n_out) {
    for (int o = 0; o < n_out; ++o) {
        const float *row = w + (long)o * n_in;
        float acc = b[o];
        for (int i = 0; i < n_in; ++i) acc += row[i] * x[i];
        y[o] = acc;
    }
}

"""
    + LAYERNORM_C
    + r"""
static float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* S4D recurrence in real arithmetic: s <- A s + W u per mode, y = Re(sum_m s) + D u. */
"""
    + SSM_STEP_C
    + "\n"
    + LOG_SOFTMAX_C
)


STATE_ACCESS = """
/* Host access to the recurrent state (save / restore a stream). */
size_t emg_model_state_bytes(void) { return sizeof ST; }
void *emg_model_state(void) { return &ST; }
"""

STATE_ACCESS_DECL = """#include <stddef.h>
size_t emg_model_state_bytes(void);
void *emg_model_state(void);

#endif /* EMG_MODEL_H */"""


def _panels(lin: Linear, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``weight (out, in)`` -> ``(ceil(out / P), in, P)`` zero-padded; bias padded alike."""
    n_out, n_in = lin.shape
    padded = -(-n_out // width) * width
    w = np.zeros((padded, n_in), np.float32)
    w[:n_out] = lin.weight
    b = np.zeros(padded, np.float32)
    b[:n_out] = lin.bias
    return np.ascontiguousarray(w.reshape(-1, width, n_in).transpose(0, 2, 1)), b


def emit_fp32(
    plan: FloatPlan,
    out_dir: Path,
    vector_width: int = 1,
    group_frames: int = 4,
    inline_activations: bool = False,
) -> CLibrary:
    """Write ``emg_model.h`` / ``emg_model.c`` of ``plan`` into ``out_dir``.

    ``vector_width``: 1 for the scalar microcontroller layout, 4..64 for output panels of
    that many floats (SIMD hosts); see the module docstring. ``group_frames``: frames per
    weight pass of the SIMD layout's multi-frame products. ``inline_activations`` (SIMD
    layout only): GELU and sigmoid from vectorisable inline erf / exp approximations instead
    of libm's ``erff`` / ``expf`` (``cgen/simd_kernels.py``; different last bits, measured
    within 1e-5 of the model).
    """
    assert plan.bb_in and plan.bb_out and plan.classifier
    if vector_width != 1 and not 2 <= vector_width <= 64:
        raise ValueError(f"vector_width must be 1 or 2..64, got {vector_width}")
    if not 1 <= group_frames <= 16:
        raise ValueError(f"group_frames must be 1..16, got {group_frames}")
    vec = vector_width > 1

    def weights(name: str, lin: Linear, w_name: str = "_w", b_name: str = "_b") -> list[str]:
        w, b = _panels(lin, vector_width) if vec else (lin.weight, lin.bias)
        return [c_float_array(name + w_name, w), c_float_array(name + b_name, b)]

    def ssm_table(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values.T) if vec else values  # (H, M) -> (M, H)

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
            consts += weights(name, lin)
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
        consts += weights(f"tc{i}", lin)
        scratch.append(f"float tc{i}[{frames * n_out}];")
        if vec:
            body.append(
                f"    linear_frames({src}, {frames}, {k * width}, {k * width}, tc{i}_w, tc{i}_b, S.tc{i}, {n_out}, {n_out});\n"
                f"    for (int o = 0; o < {frames * n_out}; ++o) S.tc{i}[o] = gelu(S.tc{i}[o]);"
            )
        else:
            body.append(
                f"    for (int t = 0; t < {frames}; ++t) {{\n"
                f"        linear({src} + t * {k * width}, {k * width}, tc{i}_w, tc{i}_b, S.tc{i} + t * {n_out}, {n_out});\n"
                f"        for (int o = 0; o < {n_out}; ++o) S.tc{i}[t * {n_out} + o] = gelu(S.tc{i}[t * {n_out} + o]);\n"
                f"    }}"
            )
        src, width = f"S.tc{i}", n_out
    h = plan.bb_in.shape[0]
    consts += weights("bb_in", plan.bb_in)
    group = max([blk.frames_in for blk in plan.blocks], default=1) if vec else 1
    scratch += [f"float x[{frames * h}];", f"float y[{group * h}];", f"float z[{group * 2 * h}];"]
    if vec:
        body.append(
            f"    linear_frames({src}, {frames}, {width}, {width}, bb_in_w, bb_in_b, S.x, {h}, {h});"
        )
    else:
        body.append(
            f"    for (int t = 0; t < {frames}; ++t)\n"
            f"        linear({src} + t * {width}, {width}, bb_in_w, bb_in_b, S.x + t * {h}, {h});"
        )
    modes = plan.blocks[0].a_re.shape[1] if plan.blocks else 1
    state = [f"float ssm[{max(len(plan.blocks), 1)}][{h * modes * 2}];"]
    for i, blk in enumerate(plan.blocks):
        n = f"s4_{i}"
        for attr in ("a_re", "a_im", "w_re", "w_im"):
            consts.append(c_float_array(f"{n}_{attr}", ssm_table(getattr(blk, attr))))
        consts.append(c_float_array(f"{n}_d", blk.d))
        consts += weights(n, blk.out_conv, "_cw", "_cb")
        consts += [
            c_float_array(f"{n}_g", blk.norm.gamma),
            c_float_array(f"{n}_beta", blk.norm.beta),
        ]
        fin, pool = blk.frames_in, blk.pool
        code = (
            [
                f"    for (int t = 0; t < {fin}; ++t)",
                f"        ssm_step(ST.ssm[{i}], {n}_a_re, {n}_a_im, {n}_w_re, {n}_w_im, {n}_d, S.x + t * {h}, S.y + t * {h}, {h}, {modes});",
                f"    for (int c = 0; c < {fin * h}; ++c) S.y[c] = gelu(S.y[c]);",
                f"    linear_frames(S.y, {fin}, {h}, {h}, {n}_cw, {n}_cb, S.z, {2 * h}, {2 * h});",
                f"    for (int t = 0; t < {fin}; ++t)",
                f"        for (int c = 0; c < {h}; ++c) S.x[t * {h} + c] += S.z[t * {2 * h} + c] * sigmoid(S.z[t * {2 * h} + {h} + c]);",
            ]
            if vec
            else [
                f"    for (int t = 0; t < {fin}; ++t) {{",
                f"        float *xt = S.x + t * {h};",
                f"        ssm_step(ST.ssm[{i}], {n}_a_re, {n}_a_im, {n}_w_re, {n}_w_im, {n}_d, xt, S.y, {h}, {modes});",
                f"        for (int c = 0; c < {h}; ++c) S.y[c] = gelu(S.y[c]);",
                f"        linear(S.y, {h}, {n}_cw, {n}_cb, S.z, {2 * h});",
                f"        for (int c = 0; c < {h}; ++c) xt[c] = S.z[c] * sigmoid(S.z[{h} + c]) + xt[c];",
                "    }",
            ]
        )
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
    consts += weights("bb_out", plan.bb_out) + weights("cls", plan.classifier)
    scratch += [f"float dec[{d_out}];", f"float logits[{k}];"]
    body.append(
        f"    linear(S.x, {h}, bb_out_w, bb_out_b, S.dec, {d_out});\n"
        f"    for (int c = 0; c < {d_out}; ++c) S.dec[c] = gelu(S.dec[c]);\n"
        f"    linear(S.dec, {d_out}, cls_w, cls_b, S.logits, {k});\n"
        f"    log_softmax(S.logits, log_probs, {k});"
    )
    header = _header(plan, "fp32", 0)
    source = _source(plan, consts, state, scratch, body)
    if vec:
        header = header.replace("#endif /* EMG_MODEL_H */", STATE_ACCESS_DECL)
        defines = f"\n#define EMG_PANEL {vector_width}\n#define EMG_GROUP {group_frames}\n"
        activations = INLINE_ACTIVATIONS if inline_activations else LIBM_ACTIVATIONS
        kernels = VECTOR_KERNELS.replace("/* EMG_ACTIVATIONS */\n", activations)
        source = source.replace(KERNELS, defines + kernels)
        source += STATE_ACCESS
    return write_library(out_dir, header, source)


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
