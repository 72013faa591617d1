"""Generation speed of the synthetic dataset (run by hand; numbers go to docs/synthetic.md).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_synthetic.py --preset demo

Writes the preset into a temporary directory (deleted afterwards) and reports seconds of
EMG generated per second of wall time, overall and per stage (typing model, signal
rendering, HDF5 writing), plus the bytes written.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from emg2qwerty_ssm.synthetic import dataset as ds
from emg2qwerty_ssm.synthetic import emg as emg_mod
from emg2qwerty_ssm.synthetic import typing as typing_mod
from emg2qwerty_ssm.synthetic.params import preset_config


def _timed(module, name: str, totals: dict[str, float]) -> None:
    """Wrap module.name so its wall time accumulates in totals[name]."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapper)
    if hasattr(ds, name):
        setattr(ds, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    totals: dict[str, float] = {}
    _timed(typing_mod, "simulate_typing", totals)
    _timed(emg_mod, "render", totals)
    _timed(ds, "_write_session", totals)
    config = preset_config(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cpu_start = time.process_time()
        manifest = ds.generate_dataset(Path(tmp), config, args.seed, preset=args.preset, log=None)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    emg_s = manifest["emg_seconds"]
    n_sessions = len(manifest["sessions"])
    print(
        f"preset {args.preset}: {n_sessions} sessions, {emg_s / 60:.1f} min of EMG, "
        f"{size / 1e9:.2f} GB on disk"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    print(f"total {wall:.1f} s wall -> {emg_s / wall:.0f} s of EMG per second")
    print(f"total {cpu:.1f} s CPU  -> {emg_s / cpu:.0f} s of EMG per CPU second")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {name:>16}: {seconds:6.1f} s ({emg_s / seconds:.0f} s of EMG per second)")


if __name__ == "__main__":
    main()
