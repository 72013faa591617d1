"""Streaming speed at batch 1: real-time factor and per-chunk latency, fast vs today's path.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_streaming.py \
        [--models tc_s4_small tc_s4_medium s4_large gru_s4_small egru_s4_small] \
        [--chunk-ms 48] [--seconds 10] [--repeats 3] [--no-c] [--c-ablation]

For each model (random weights, eval mode) a synthetic 2 kHz session of ``--seconds`` is fed
chunk by chunk; each repeat times, back to back, today's implementation (reference mode,
``EMGModel.forward_stream``), the fused NumPy engine (``forward_stream``, "fused") and the
compiled C engine (``export/host_engine.CStreamEngine``, "C": the microcontroller export's fp32
C as a cached shared library, one call per output frame). Prints per-chunk latency p50 / p99
in ms, the real-time factor (chunk duration / mean latency), each engine's speed-up over today's
and the largest difference from today's log-probabilities. The C library is built (or taken
from the cache) before the timing; the build time is printed. Models the C generator does not
support (GRU / EGRU front-ends) show "n/a" in the C columns; they have no separate reference
front-end either, so their ratio shows what the backbone's speed-up is worth.
``--c-ablation`` then times C builds that each undo one choice of the default build (panel
width, frame groups, FMA contraction, inline GELU / sigmoid).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _speed_common import machine_line, median, paper_model, percentile  # noqa: E402

from emg2qwerty_ssm.export.host_engine import (  # noqa: E402
    CStreamEngine,
    ToolchainError,
    UnsupportedModelError,
)
from emg2qwerty_ssm.models import EMGModel  # noqa: E402
from emg2qwerty_ssm.models.s4d_reference import reference_mode  # noqa: E402

DEFAULT_MODELS = ["tc_s4_small", "tc_s4_medium", "s4_large", "gru_s4_small", "egru_s4_small"]


def stream_once(model: EMGModel, x: torch.Tensor, chunk: int) -> tuple[list[float], torch.Tensor]:
    """Per-chunk latencies in seconds and the concatenated output."""
    latencies, outs = [], []
    with torch.no_grad():
        state = model.initial_state(x.shape[1])
        for start in range(0, x.shape[0], chunk):
            t0 = time.perf_counter()
            out, state = model.forward_stream(x[start : start + chunk], state)
            latencies.append(time.perf_counter() - t0)
            outs.append(out)
    return latencies, torch.cat(outs)


def stream_c(engine: CStreamEngine, x: np.ndarray, chunk: int) -> tuple[list[float], np.ndarray]:
    """Per-chunk latencies of the C engine on ``x (T, 2, 16)`` and its ``(frames, classes)``."""
    latencies, outs = [], []
    engine.reset()
    for start in range(0, x.shape[0], chunk):
        t0 = time.perf_counter()
        out = engine.push(x[start : start + chunk])
        latencies.append(time.perf_counter() - t0)
        outs.append(out)
    return latencies, np.concatenate(outs)


def open_c(model: EMGModel, enabled: bool) -> tuple[CStreamEngine | None, str]:
    if not enabled:
        return None, "C engine off (--no-c)"
    t0 = time.perf_counter()
    try:
        engine = CStreamEngine(model)
    except (ToolchainError, UnsupportedModelError) as err:
        return None, f"C engine n/a: {str(err).split(';')[0]}"
    how = "compiled" if engine.library.compiled else "from cache"
    return engine, f"C library {how} in {time.perf_counter() - t0:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--chunk-ms", type=float, default=48.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-c", action="store_true", help="skip the compiled C engine")
    parser.add_argument("--c-ablation", action="store_true", help="time C build variants")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chunk = int(round(args.chunk_ms * 2))  # 2 kHz
    print(machine_line())
    print(f"chunk {chunk} samples ({args.chunk_ms:g} ms), {args.seconds:g} s per run, batch 1")
    header = (
        f"{'model':<15}{'ref p50':>9}{'ref p99':>9}{'ref RTF':>9}"
        f"{'fused p50':>10}{'fused p99':>10}{'fused RTF':>10}{'ratio':>8}{'max|diff|':>11}"
        f"{'C p50':>9}{'C p99':>9}{'C RTF':>9}{'C ratio':>9}{'C |diff|':>10}"
    )
    print(header)
    for name in args.models:
        model = paper_model(name)
        torch.manual_seed(1)
        x = torch.randn(int(args.seconds * 2000), 1, 2, 16)
        x_np = np.ascontiguousarray(x[:, 0].numpy())
        c_engine, c_note = open_c(model, not args.no_c)
        print(f"# {name}: {c_note}", flush=True)
        ref_lat: list[float] = []
        fast_lat: list[float] = []
        c_lat: list[float] = []
        diff = c_diff = 0.0
        stream_once(model, x[: 4 * chunk], chunk)  # warm-up (tables, allocator)
        if c_engine is not None:
            stream_c(c_engine, x_np[: 4 * chunk], chunk)
        for _ in range(args.repeats):
            with reference_mode():
                lat, ref_out = stream_once(model, x, chunk)
            ref_lat += lat
            lat, fast_out = stream_once(model, x, chunk)
            fast_lat += lat
            diff = max(diff, (ref_out - fast_out).abs().max().item())
            if c_engine is not None:
                lat, c_out = stream_c(c_engine, x_np, chunk)
                c_lat += lat
                ref_np = ref_out[:, 0].numpy()
                c_diff = max(c_diff, float(np.abs(ref_np[: len(c_out)] - c_out).max()))
        chunk_s = chunk / 2000
        ref_mean = sum(ref_lat) / len(ref_lat)
        fast_mean = sum(fast_lat) / len(fast_lat)
        c_cols = f"{'n/a':>9}" * 4 + f"{'n/a':>10}"
        if c_lat:
            c_mean = sum(c_lat) / len(c_lat)
            c_cols = (
                f"{median(c_lat) * 1e3:>9.3f}{percentile(c_lat, 99) * 1e3:>9.3f}"
                f"{chunk_s / c_mean:>9.1f}{ref_mean / c_mean:>9.1f}{c_diff:>10.2e}"
            )
        print(
            f"{name:<15}{percentile(ref_lat, 50) * 1e3:>9.3f}{percentile(ref_lat, 99) * 1e3:>9.3f}"
            f"{chunk_s / ref_mean:>9.1f}{median(fast_lat) * 1e3:>10.3f}"
            f"{percentile(fast_lat, 99) * 1e3:>10.3f}{chunk_s / fast_mean:>10.1f}"
            f"{ref_mean / fast_mean:>8.2f}{diff:>11.2e}" + c_cols,
            flush=True,
        )
    if args.c_ablation:
        ablation(args, chunk)
    print(machine_line())


C_VARIANTS = {
    "default (64, 2, fma, inline)": {},
    "libm erff/expf": {"inline_activations": False},
    "-ffp-contract=off": {"fp_contract": "off"},
    "1 frame per pass": {"group_frames": 1},
    "panels of 32": {"vector_width": 32},
    "panels of 16": {"vector_width": 16},
}


def ablation(args: argparse.Namespace, chunk: int) -> None:
    """Real-time factor of C build variants, interleaved round by round (best of repeats)."""
    print("C build variants: RTF (best run of --repeats, interleaved) and max |diff| to offline")
    for name in args.models:
        model = paper_model(name)
        engines = {}
        for label, options in C_VARIANTS.items():
            try:
                engines[label] = CStreamEngine(model, **options)
            except (ToolchainError, UnsupportedModelError):
                break
        if not engines:
            continue
        torch.manual_seed(1)
        x = torch.randn(int(args.seconds * 2000), 1, 2, 16)
        with torch.no_grad():
            ref = model(x)[:, 0].numpy()
        x_np = np.ascontiguousarray(x[:, 0].numpy())
        best = dict.fromkeys(engines, float("inf"))
        diff = dict.fromkeys(engines, 0.0)
        for _ in range(args.repeats):
            for label, engine in engines.items():
                lat, out = stream_c(engine, x_np, chunk)
                best[label] = min(best[label], sum(lat))
                diff[label] = float(np.abs(out - ref[: len(out)]).max())
        cells = ", ".join(
            f"{label}: {args.seconds / best[label]:.0f}x ({diff[label]:.1e})" for label in engines
        )
        print(f"{name}: {cells}", flush=True)


if __name__ == "__main__":
    main()
