"""C and Cortex-M export: generate a C99 library for a model's streaming step, check it.

``export_c(model, out_dir, target=..., precision=..., calibration=..., session_emg=...)``

1. folds the model into a float plan (unsupported blocks raise, naming the supported ones);
2. int8: calibrates on ``calibration`` and quantises (see ``cgen/quant.py``; the input layer
   stays float32 unless ``quantize_input_layer``);
3. writes ``emg_model.h`` / ``emg_model.c`` (weights ``const``, state static, no heap);
4. builds them on the host with ``gcc -O2 -Wall -Wextra -Werror -std=c99``, streams the
   session through them and compares with the model's offline forward (fp32: within 1e-4;
   int8: bit-exact against the NumPy integer reference) and the greedy decoded text;
5. ``cortex-m4`` / ``cortex-m7``: cross-compiles firmware, measures flash / RAM / stack, fails
   with :class:`ModelDoesNotFitError` when it does not fit the target's part, then runs the
   first seconds of the session under QEMU, compares every output with the host build and
   counts instructions per step.

Returns the report fields it measured (see docs/mcu.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from emg2qwerty_ssm.export.cgen.emit_fp32 import emit_fp32
from emg2qwerty_ssm.export.cgen.emit_int8 import emit_int8
from emg2qwerty_ssm.export.cgen.host import ToolchainError, build_host, frames_to_steps, run_host
from emg2qwerty_ssm.export.cgen.int8_reference import Int8Reference
from emg2qwerty_ssm.export.cgen.plan import build_plan
from emg2qwerty_ssm.export.cgen.quant import quantize_plan
from emg2qwerty_ssm.export.mcu.build import (
    ModelDoesNotFitError,
    build_mcu,
    toolchain_available,
)
from emg2qwerty_ssm.export.mcu.qemu import run_qemu
from emg2qwerty_ssm.export.mcu.targets import PARTS, get_target
from emg2qwerty_ssm.models.encoder import RotationInvariantEncoder
from emg2qwerty_ssm.models.model import EMGModel

TARGETS = ("c", "cortex-m4", "cortex-m7")
PRECISIONS = ("fp32", "int8")
FP32_TOLERANCE = 1e-4  # host C vs PyTorch
# QEMU vs host C: int8 uses only IEEE-exact float ops (bit-identical); fp32 calls libm's
# expf/erff/logf, whose newlib and glibc versions may differ by an ulp or two.
QEMU_TOLERANCE = {"int8": 0.0, "fp32": 1e-5}

__all__ = ["export_c", "ModelDoesNotFitError", "ToolchainError", "greedy_text"]


def greedy_text(log_probs: np.ndarray) -> str:
    """Best-path CTC decoding of ``(T, classes)`` to text (blank = last class)."""
    from emg2qwerty_ssm.charset import charset

    cs = charset()
    best = log_probs.argmax(axis=1)
    prev = np.concatenate([[cs.null_class], best[:-1]])
    labels = best[(best != cs.null_class) & (best != prev)]
    return cs.labels_to_str([int(v) for v in labels])


def _as_emg(name: str, value: torch.Tensor | np.ndarray, model: EMGModel) -> np.ndarray:
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    encoder = cast(RotationInvariantEncoder, model.encoder)  # build_plan checked the type
    bands, electrodes = encoder.bands, encoder.electrodes
    if arr.ndim != 3 or arr.shape[1:] != (bands, electrodes):
        raise ValueError(
            f"{name} must be raw EMG (T, {bands}, {electrodes}), got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] < model.stride:
        raise ValueError(f"{name} has {arr.shape[0]} samples, fewer than one step ({model.stride})")
    return arr.astype(np.float32)


def export_c(
    model: EMGModel,
    out_dir: Path,
    *,
    target: str,
    precision: str,
    calibration: torch.Tensor | None,
    session_emg: torch.Tensor,
    qemu_seconds: float = 3.0,
    qemu_timeout_s: float = 600.0,
    quantize_input_layer: bool = False,
) -> dict[str, Any]:
    """Generate, build and check the C library; see the module docstring."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    mcu = get_target(target) if target != "c" else None
    if mcu is not None and (missing := toolchain_available()) is not None:
        raise ToolchainError(missing)
    model = model.eval()
    plan = build_plan(model)  # raises UnsupportedModelError before any long work
    session = _as_emg("session_emg", session_emg, model)
    calib = session if calibration is None else _as_emg("calibration", calibration, model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "target": target,
        "precision": precision,
        "model": model.name,
        "params": plan.params,
        "stride": model.stride,
    }
    qplan = None
    if precision == "int8":
        qplan = quantize_plan(plan, calib, quantize_input_layer)
        report["calibration"] = "session_emg" if calibration is None else "calibration"
        report["input_layer"] = "int8" if quantize_input_layer else "float32"
        lib = emit_int8(qplan, out_dir)
    else:
        lib = emit_fp32(plan, out_dir)
    steps = frames_to_steps(session, model.stride)
    exe = build_host(lib, out_dir)
    host = run_host(exe, steps, out_dir, plan.num_classes)
    with torch.no_grad():
        ref = model(torch.from_numpy(session[: len(steps) * model.stride]).unsqueeze(1))[:, 0]
    ref_np = ref.numpy()
    report["steps"] = int(len(steps))
    report["max_abs_diff"] = float(np.abs(host.log_probs - ref_np).max())
    report["greedy_text_equal"] = greedy_text(host.log_probs) == greedy_text(ref_np)
    audio_seconds = len(steps) * model.stride / model.input_rate_hz
    report["host_c_rtf"] = host.step_seconds / audio_seconds
    report["host_c_us_per_step"] = 1e6 * host.step_seconds / len(steps)
    checks: dict[str, bool] = {}
    if qplan is not None:
        reference = Int8Reference(qplan).run(steps)
        report["int8_reference_max_abs_diff"] = float(np.abs(reference - host.log_probs).max())
        checks["int8_bit_exact_vs_numpy_reference"] = bool(
            np.array_equal(reference, host.log_probs)
        )
    else:
        checks["fp32_within_1e-4_of_pytorch"] = report["max_abs_diff"] <= FP32_TOLERANCE
    report["artefacts"] = {
        "header": str(lib.header),
        "source": str(lib.source),
        "host_harness": str(exe),
        "host_log_probs": str(out_dir / "host_output.f32"),  # (steps, classes) float32
    }
    report["checks"] = checks
    if mcu is None:
        return report
    build = build_mcu(lib, mcu, out_dir)
    fp = build.footprint
    report.update(
        flash_bytes=fp.flash_bytes,
        ram_bytes=fp.ram_bytes,
        stack_bytes=fp.stack_bytes,
        stack_bytes_static_estimate=fp.stack_bytes,
        library_flash_bytes=fp.library_flash_bytes,
        library_ram_bytes=fp.library_ram_bytes,
        fits=dict(fp.fits),
    )
    report["artefacts"]["linker_map"] = str(build.map_file)
    problem = fp.check(mcu.part.name)
    if problem is not None:
        other = [p.name for p in PARTS if fp.fits.get(p.name)]
        hint = "; try precision=int8" if precision == "fp32" else ""
        if other:
            hint += f"; it fits {', '.join(other)}"
        raise ModelDoesNotFitError(
            f"model {model.name!r} ({precision}) does not fit {mcu.part.name} ({target}): "
            f"{problem}{hint}",
            report,
        )
    assert build.elf is not None
    report["artefacts"]["firmware_elf"] = str(build.elf)
    n_qemu = max(1, min(len(steps), int(qemu_seconds * model.input_rate_hz / model.stride)))
    run = run_qemu(build.elf, mcu, steps[:n_qemu], out_dir, plan.num_classes, qemu_timeout_s)
    diff = float(np.abs(run.log_probs - host.log_probs[:n_qemu]).max())
    tol = QEMU_TOLERANCE[precision]
    steps_per_s = model.input_rate_hz / model.stride
    instr = float(run.instructions_per_step.mean())
    report.update(
        qemu_board=mcu.board,
        qemu_steps=n_qemu,
        qemu_max_abs_diff_vs_host=diff,
        qemu_tolerance=tol,
        instructions_per_step=instr,
        instructions_per_step_max=float(run.instructions_per_step.max()),
        stack_bytes=max(run.stack_bytes, 0) + 64,  # painted high-water mark + guard gap
        est_load={mcu.part.name: instr * steps_per_s / mcu.part.clock_hz},
        est_load_note=(
            f"QEMU counts instructions, not cycles: load = instructions/step x "
            f"{steps_per_s:.2f} steps/s / {mcu.part.clock_hz / 1e6:.0f} MHz at 1 instruction "
            "per cycle (an estimate; wait states and multi-cycle loads add to it)"
        ),
    )
    checks["qemu_matches_host"] = diff <= tol
    return report
