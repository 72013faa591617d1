"""Measure the generated C library: host-C real-time factor, Cortex-M footprint, QEMU
instructions per step and estimated MCU load, for the paper's models in fp32 and int8.

Run by hand (results are written down in docs/mcu.md):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_c_export.py --out outputs/bench_c_export

Footprint and instruction counts do not depend on the weight values, so models are built from
their configs with random weights unless ``--checkpoint`` is given. The session is random EMG
(``--seconds`` long); the int8 build calibrates on a second random stretch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def _model(name: str, checkpoint: str | None) -> torch.nn.Module:
    if checkpoint:
        from emg2qwerty_ssm.models import load_model

        return load_model(checkpoint)
    from hydra import compose, initialize_config_dir

    from emg2qwerty_ssm.models.model import build_model

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose(config_name="config", overrides=[f"model={name}"])
    torch.manual_seed(0)
    return build_model(cfg.model).eval()


def main() -> None:
    from emg2qwerty_ssm.export.c_target import ModelDoesNotFitError, export_c

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["tc_s4_small", "tc_s4_medium", "s4_large"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--targets", nargs="+", default=["cortex-m4", "cortex-m7"])
    parser.add_argument("--checkpoint", default=None, help="use this checkpoint (one model)")
    parser.add_argument("--seconds", type=float, default=10.0, help="session length (host run)")
    parser.add_argument("--qemu-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_c_export"))
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name in args.models:
        model = _model(name, args.checkpoint)
        samples = int(args.seconds * 2000)
        session = torch.randn(samples, 2, 16, generator=gen) * 2.0
        calibration = torch.randn(samples, 2, 16, generator=gen) * 2.0
        for precision in args.precisions:
            for target in args.targets:
                out = args.out / f"{name}-{precision}-{target}"
                try:
                    report = export_c(
                        model,  # type: ignore[arg-type]
                        out,
                        target=target,
                        precision=precision,
                        calibration=calibration,
                        session_emg=session,
                        qemu_seconds=args.qemu_seconds,
                    )
                except ModelDoesNotFitError as err:
                    report = {**err.report, "does_not_fit": str(err)}
                keys = [
                    "model",
                    "precision",
                    "target",
                    "max_abs_diff",
                    "host_c_rtf",
                    "host_c_us_per_step",
                    "flash_bytes",
                    "ram_bytes",
                    "stack_bytes",
                    "stack_bytes_static_estimate",
                    "library_flash_bytes",
                    "library_ram_bytes",
                    "instructions_per_step",
                    "est_load",
                    "fits",
                    "qemu_max_abs_diff_vs_host",
                    "checks",
                    "does_not_fit",
                ]
                row = {k: report.get(k) for k in keys}
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
