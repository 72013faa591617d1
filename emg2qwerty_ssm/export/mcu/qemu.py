"""Run the firmware under ``qemu-system-arm`` with semihosting and instruction counting."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emg2qwerty_ssm.export.cgen.host import require_tool
from emg2qwerty_ssm.export.mcu.build import INSTALL_HINT
from emg2qwerty_ssm.export.mcu.targets import McuTarget

CALIBRATION_INSTRUCTIONS = 2_000_000  # the firmware's spin(1000000): subs + bne per turn


@dataclass
class QemuRun:
    log_probs: np.ndarray  # (steps, classes) float32
    instructions_per_step: np.ndarray  # (steps,) estimated from SysTick ticks
    stack_bytes: int  # painted-stack high-water mark below main's frame


def run_qemu(
    elf: Path, target: McuTarget, steps: np.ndarray, work_dir: Path, classes: int, timeout: float
) -> QemuRun:
    """Feed ``steps (n, input_size)`` float32 through the firmware; 1 instruction = 1 ns."""
    qemu = require_tool("qemu-system-arm", INSTALL_HINT)
    run_dir = work_dir / f"qemu-{target.name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    steps.astype(np.float32).tofile(run_dir / "input.f32")
    cmd = [qemu, "-M", target.board, "-nographic", "-monitor", "none", "-serial", "null"]
    cmd += ["-semihosting-config", "enable=on,target=native", "-icount", "shift=0"]
    cmd += ["-kernel", str(elf.resolve())]
    try:
        result = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"QEMU ({target.board}) did not finish within {timeout:.0f} s") from err
    if result.returncode != 0:
        raise RuntimeError(
            f"QEMU ({target.board}) exited with {result.returncode}: "
            f"{(result.stdout + result.stderr)[-2000:]}"
        )
    out = np.fromfile(run_dir / "output.f32", dtype=np.float32).reshape(-1, classes)
    counts = np.fromfile(run_dir / "counts.u32", dtype=np.uint32)
    calib_ticks, per_step = int(counts[0]), counts[1:]
    marker = np.nonzero(per_step == 0xFFFFFFFF)[0]
    if len(marker) != 1 or out.shape[0] != steps.shape[0]:
        raise RuntimeError(f"QEMU run incomplete: {out.shape[0]} of {steps.shape[0]} steps")
    stack = int(per_step[marker[0] + 1])
    per_step = per_step[: marker[0]].astype(np.float64)
    if calib_ticks == 0:
        raise RuntimeError(f"SysTick did not advance on {target.board}; cannot count instructions")
    instr_per_tick = CALIBRATION_INSTRUCTIONS / calib_ticks
    return QemuRun(out, per_step * instr_per_tick, stack)
