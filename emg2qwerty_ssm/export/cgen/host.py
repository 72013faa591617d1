"""Build a generated library on the host with gcc and stream a session through it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.export.cgen.csource import CLibrary

HOST_CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror", "-std=c99", "-ffp-contract=off"]

HARNESS = r"""/* Host harness: stream a session file through the generated step.
 * usage: harness INPUT.f32 OUTPUT.f32 ; INPUT holds n_steps x EMG_MODEL_INPUT_SIZE floats,
 * OUTPUT receives n_steps x EMG_MODEL_NUM_CLASSES floats. Prints steps and seconds spent in
 * emg_model_step on stdout. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "emg_model.h"

static float in_buf[EMG_MODEL_INPUT_SIZE];
static float out_buf[EMG_MODEL_NUM_CLASSES];

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s INPUT.f32 OUTPUT.f32\n", argv[0]); return 2; }
    FILE *fi = fopen(argv[1], "rb"), *fo = fopen(argv[2], "wb");
    if (!fi || !fo) { fprintf(stderr, "cannot open %s or %s\n", argv[1], argv[2]); return 2; }
    emg_model_reset();
    long steps = 0;
    double seconds = 0.0;
    while (fread(in_buf, sizeof(float), EMG_MODEL_INPUT_SIZE, fi) == EMG_MODEL_INPUT_SIZE) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        emg_model_step(in_buf, out_buf);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        seconds += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (fwrite(out_buf, sizeof(float), EMG_MODEL_NUM_CLASSES, fo) != EMG_MODEL_NUM_CLASSES) {
            fprintf(stderr, "write failed\n");
            return 1;
        }
        ++steps;
    }
    fclose(fi);
    if (fclose(fo) != 0) return 1;
    printf("steps %ld seconds %.9f\n", steps, seconds);
    return 0;
}
"""


class ToolchainError(RuntimeError):
    """A compiler or emulator is missing."""


@dataclass
class HostRun:
    log_probs: np.ndarray  # (steps, classes) float32
    step_seconds: float  # total time inside emg_model_step


def require_tool(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolchainError(f"{name} not found on PATH; {hint}")
    return path


def build_host(lib: CLibrary, out_dir: Path) -> Path:
    """Compile library + harness with ``gcc -O2 -Wall -Wextra -Werror -std=c99``."""
    cc = require_tool("gcc", "install a C compiler (Debian: apt-get install gcc)")
    harness = out_dir / "host_harness.c"
    atomic_write_text(harness, HARNESS)
    exe = out_dir / "host_harness"
    cmd = [cc, *HOST_CFLAGS, "-I", str(lib.header.parent), str(lib.source), str(harness)]
    result = subprocess.run([*cmd, "-lm", "-o", str(exe)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"host build failed ({' '.join(cmd)}):\n{result.stderr[-4000:]}")
    return exe


def frames_to_steps(session: np.ndarray, stride: int) -> np.ndarray:
    """``(T, bands, electrodes)`` -> ``(T // stride, stride * bands * electrodes)`` float32."""
    steps = session.shape[0] // stride
    return np.ascontiguousarray(session[: steps * stride], dtype=np.float32).reshape(steps, -1)


def run_host(exe: Path, steps: np.ndarray, work_dir: Path, classes: int) -> HostRun:
    """Stream ``steps (n, input_size)`` through the harness."""
    inp, out = work_dir / "host_input.f32", work_dir / "host_output.f32"
    steps.astype(np.float32).tofile(inp)
    result = subprocess.run([str(exe), str(inp), str(out)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"host harness failed: {result.stderr[-2000:]}")
    fields = result.stdout.split()
    log_probs = np.fromfile(out, dtype=np.float32).reshape(-1, classes)
    if log_probs.shape[0] != steps.shape[0]:
        raise RuntimeError(f"harness wrote {log_probs.shape[0]} frames for {steps.shape[0]} steps")
    return HostRun(log_probs, float(fields[3]))
