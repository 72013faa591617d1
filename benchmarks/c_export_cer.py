"""CER of the generated C library (host build, fp32 and int8) on a synthetic test split.

The export command measures CER for the ONNX target only; the C targets check parity on a few
seconds. This script streams every test session, whole and from a zero state, through the
host C build of each precision (the same library the Cortex-M firmware compiles; QEMU runs of
it match the host bit for bit in int8) and scores greedy and beam decoding with
``emg2qwerty_ssm.export.evaluate`` (the metric of the export's ``report.json`` ``cer``).
Run by hand (results are written down in docs/mcu.md):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/c_export_cer.py CHECKPOINT \
        --preset demo --lm models/lm/synthetic-6gram-charlm.arpa --out outputs/c_export_cer
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from emg2qwerty_ssm.export.cgen.emit_fp32 import emit_fp32
    from emg2qwerty_ssm.export.cgen.emit_int8 import emit_int8
    from emg2qwerty_ssm.export.cgen.host import build_host, frames_to_steps, run_host
    from emg2qwerty_ssm.export.cgen.plan import build_plan
    from emg2qwerty_ssm.export.cgen.quant import quantize_plan
    from emg2qwerty_ssm.export.common import (
        calibration_emg,
        load_export_model,
        load_session,
        synthetic_split,
    )
    from emg2qwerty_ssm.export.evaluate import measure_cer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--user", default="user0")
    parser.add_argument("--lm", default=None, help="KenLM for the beam decoder")
    parser.add_argument("--beam-size", type=int, default=50)
    parser.add_argument("--calibration-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("outputs/c_export_cer"))
    parser.add_argument(
        "--quantize-input-layer",
        action="store_true",
        help="int8 also on the encoder's first Linear (default: it stays float32)",
    )
    args = parser.parse_args()

    model = load_export_model(args.checkpoint, None, 0, False).eval()
    plan = build_plan(model)
    calib = calibration_emg(args.calibration_seconds, args.preset, args.seed, args.user)
    libs = {
        "fp32": emit_fp32(plan, args.out / "fp32"),
        "int8": emit_int8(
            quantize_plan(plan, calib.numpy(), args.quantize_input_layer), args.out / "int8"
        ),
    }
    exes = {p: build_host(lib, args.out / p) for p, lib in libs.items()}

    def runner(precision: str):  # noqa: ANN202
        def run(emg: torch.Tensor) -> np.ndarray:
            steps = frames_to_steps(emg.numpy(), model.stride)
            with tempfile.TemporaryDirectory() as tmp:
                return run_host(exes[precision], steps, Path(tmp), plan.num_classes).log_probs

        return run

    paths = synthetic_split(args.preset, args.seed, args.user, "test")
    sessions = [load_session(p) for p in paths]
    cer = measure_cer({p: runner(p) for p in exes}, sessions, args.lm, args.beam_size)
    report = {
        "checkpoint": str(args.checkpoint),
        "split": f"synthetic {args.preset} seed {args.seed} {args.user} test",
        "sessions": len(sessions),
        "seconds": sum(s.emg.shape[0] for s in sessions) / model.input_rate_hz,
        "lm": args.lm,
        "int8_input_layer": "int8" if args.quantize_input_layer else "float32",
        "cer": cer,
    }
    (args.out / "cer.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
