"""onnxruntime streaming speed and int8 cost of the exported step (docs/export.md).

For each model (random weights from conf/model, or --checkpoint): export the step to ONNX,
quantise it to int8 (weights of convs/linears only, and also with the recurrence's
element-wise ops: ``int8+rec``), stream the synthetic test split through onnxruntime one
frame at a time on one thread, and print

- the real-time factor (wall time / EMG time; < 1 keeps up) of onnxruntime per
  precision, and of the PyTorch step for comparison,
- the largest |log-prob| difference to the offline PyTorch model in float64 (the exact
  function; docs/export.md, "Parity"),
- CER on the split (greedy and beam) and the int8 transcripts' CER against the fp32 ones.

    OMP_NUM_THREADS=1 python benchmarks/bench_export.py --models tc_s4_small s4_large
    OMP_NUM_THREADS=1 python benchmarks/bench_export.py --checkpoint run/checkpoints/val_3.ckpt
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emg2qwerty_ssm.export import ExportableStep, stream_step
from emg2qwerty_ssm.export.common import (
    calibration_emg,
    count_params,
    load_export_model,
    load_session,
    synthetic_split,
)
from emg2qwerty_ssm.export.evaluate import measure_cer
from emg2qwerty_ssm.export.onnx_target import OnnxStreamer, export_onnx
from emg2qwerty_ssm.export.quantize import quantize_int8


def bench_model(label: str, model, args: argparse.Namespace, tmp: Path) -> dict:
    step = ExportableStep(model)
    sessions = [load_session(p) for p in synthetic_split(args.preset, 0, args.user, "test")]
    seconds = sum(s.emg.shape[0] for s in sessions) / model.input_rate_hz
    start = time.perf_counter()
    paths = {"fp32": export_onnx(step, tmp / f"{label}_fp32.onnx")}
    export_s = time.perf_counter() - start
    calibration = calibration_emg(args.calibration_seconds, args.preset, 0, args.user)
    for name, rec in (("int8", False), ("int8+rec", True)):
        paths[name] = quantize_int8(
            paths["fp32"],
            tmp / f"{label}_{name}.onnx",
            step.state_specs,
            step.stride,
            calibration,
            quantize_recurrence=rec,
        )
    row: dict = {"model": label, "params": count_params(model), "stride": step.stride}
    row["export_s"] = round(export_s, 1)
    row["onnx_bytes"] = {p: path.stat().st_size for p, path in paths.items()}
    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        references = [model64(s.emg.double().unsqueeze(1)).squeeze(1).numpy() for s in sessions]
    start = time.perf_counter()
    for s in sessions:
        stream_step(step, s.emg)
    row["rtf"] = {"pytorch_step": (time.perf_counter() - start) / seconds}
    row["max_abs_diff"] = {}
    streamers = {p: OnnxStreamer(path, step.state_specs, step.stride) for p, path in paths.items()}
    for precision, streamer in streamers.items():
        start = time.perf_counter()
        outs = [streamer.run(s.emg) for s in sessions]
        row["rtf"][f"onnxruntime_{precision}"] = (time.perf_counter() - start) / seconds
        row["max_abs_diff"][precision] = max(
            float(np.abs(o - r).max()) for o, r in zip(outs, references, strict=True)
        )
    if not args.no_cer:
        cers = measure_cer({p: s.run for p, s in streamers.items()}, sessions, None, 50)
        rec_only = measure_cer(
            {"fp32": streamers["fp32"].run, "int8": streamers["int8+rec"].run}, sessions, None, 50
        )
        cers["int8+rec_vs_fp32"] = rec_only["int8_vs_fp32"]
        row["cer"] = cers
    row["session_seconds"] = seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["tc_s4_small", "tc_s4_medium", "s4_large"])
    parser.add_argument("--checkpoint", nargs="*", default=[])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--user", default="user0")
    parser.add_argument("--calibration-seconds", type=float, default=20.0)
    parser.add_argument("--no-cer", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = [(m, load_export_model(model=m)) for m in args.models]
        sources += [(Path(c).stem, load_export_model(checkpoint=c)) for c in args.checkpoint]
        for label, model in sources:
            row = bench_model(label, model, args, Path(tmp))
            rows.append(row)
            print(json.dumps(row, indent=1))
    print(
        "\n| model | params | RTF torch step | RTF ORT fp32 | RTF ORT int8 | max diff fp32 "
        "| max diff int8 | max diff int8+rec | ONNX fp32 / int8 (kB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rtf, diff, size = r["rtf"], r["max_abs_diff"], r["onnx_bytes"]
        print(
            f"| {r['model']} | {r['params']:,} | {rtf['pytorch_step']:.4f} | "
            f"{rtf['onnxruntime_fp32']:.4f} | {rtf['onnxruntime_int8']:.4f} | "
            f"{diff['fp32']:.1e} | {diff['int8']:.3f} | {diff['int8+rec']:.3f} | "
            f"{size['fp32'] / 1e3:.0f} / {size['int8'] / 1e3:.0f} |"
        )
    if not args.no_cer:
        print("\n| model | CER fp32 g/b | CER int8 g/b | int8 vs fp32 g/b | int8+rec vs fp32 g/b |")
        print("|---|---|---|---|---|")
        for r in rows:
            c = r["cer"]

            def pair(d: dict) -> str:
                return "/".join("-" if v is None else f"{v:.1f}" for v in d.values())

            print(
                f"| {r['model']} | {pair(c['fp32'])} | {pair(c['int8'])} | "
                f"{pair(c['int8_vs_fp32'])} | {pair(c['int8+rec_vs_fp32'])} |"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
