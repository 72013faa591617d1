"""How long one training window takes to read (WindowedEMGDataset.__getitem__), by hand:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_data_loading.py [--minutes 5]

Writes a session of the given length in the emg2qwerty layout to a temp dir (random EMG,
one keystroke every 150 ms), then times random access to 4 s windows with padding (1800, 200)
(the training configuration) and to 32 s windows, read from the HDF5 file versus from the
same rows already in memory. Prints milliseconds per window.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from emg2qwerty_ssm import data
from emg2qwerty_ssm.data import session as data_session


def write_session(path: Path, minutes: float) -> None:
    n = int(minutes * 60 * 2000)
    dtype = np.dtype([("emg_left", "<f4", (16,)), ("emg_right", "<f4", (16,)), ("time", "<f8")])
    rows = np.zeros(n, dtype=dtype)
    rng = np.random.default_rng(0)
    rows["emg_left"] = rng.standard_normal((n, 16), dtype=np.float32)
    rows["emg_right"] = rng.standard_normal((n, 16), dtype=np.float32)
    rows["time"] = 1.6e9 + np.arange(n) / 2000.0
    keys = [
        {"key": "abcdefghij"[i % 10], "start": 1.6e9 + 0.15 * i, "end": 1.6e9 + 0.15 * i + 0.08}
        for i in range(int(minutes * 60 / 0.15))
    ]
    with h5py.File(path, "w") as f:
        g = f.create_group("emg2qwerty")
        g.create_dataset("timeseries", data=rows)
        g.attrs.update(
            session_name="bench",
            user="0",
            condition="on_keyboard",
            duration_mins=minutes,
            keystrokes=json.dumps(keys),
            prompts="[]",
        )


def time_windows(ds: data.WindowedEMGDataset, reps: int) -> float:
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(ds), reps)
    ds[0]  # open the file outside the timing
    t0 = time.perf_counter()
    for i in idx:
        ds[int(i)]
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.hdf5"
        write_session(path, args.minutes)
        print(f"session: {args.minutes} min, {path.stat().st_size / 2**20:.0f} MiB")
        for w, label in ((8000, "4 s"), (64000, "32 s")):
            ds = data.WindowedEMGDataset(path, w, padding=(1800, 200), jitter=True)
            ms_file = time_windows(ds, args.reps)
            session = data_session.get_open_session(path)
            h5_dataset = session.timeseries
            session.timeseries = h5_dataset[:]  # same rows, in memory
            ms_mem = time_windows(ds, args.reps)
            session.timeseries = h5_dataset
            print(f"{label} windows: {ms_file:.2f} ms/window from HDF5, {ms_mem:.2f} ms in memory")


if __name__ == "__main__":
    main()
