"""Throughput of the fast beam decoder vs. the per-frame Python oracle (run by hand).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_beam_decoder.py [--repeats 5]

Setting of issue 6: beam 50, 10 labels per frame, the reuters 3-gram character LM, peaky
emissions of a ~270-character text. Prints frames/s of both and their ratio, and checks that
the outputs are identical. ``--workers N`` also times ``decode_batch`` over N processes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from beam_oracle import OracleBeamDecoder  # noqa: E402

from emg2qwerty_ssm.charset import charset  # noqa: E402
from emg2qwerty_ssm.decoding import CTCBeamDecoder  # noqa: E402

TEXT = (
    "the quick brown fox jumps over the lazy dog. shares of the company rose sharply after "
    "it reported record profits for the third quarter, beating analyst forecasts. the "
    "central bank said it would keep interest rates unchanged, citing stable inflation and "
    "steady growth in consumer spending."
)


def peaky_emissions(text: str, seed: int = 0, frames_per_char: int = 3) -> np.ndarray:
    """(T, 99) float32 log-softmax: one confident spike per character, blanks in between.

    Logits are N(0, 1) noise plus +6 on the spoken label (the character on its first
    frame, blank on the others), so each frame still has ~10 plausible alternatives.
    """
    cs = charset()
    rng = np.random.default_rng(seed)
    labels = cs.str_to_labels(text)
    t_count = len(labels) * frames_per_char
    logits = rng.normal(size=(t_count, cs.num_classes))
    target = np.full(t_count, cs.null_class)
    target[::frames_per_char] = labels
    logits[np.arange(t_count), target] += 6.0
    logits -= np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return logits.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lm", default=str(REPO / "tests" / "fixtures" / "decoding" / "reuters-3gram-char.arpa")
    )
    parser.add_argument("--no-lm", action="store_true", help="decode without a language model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="also time decode_batch")
    args = parser.parse_args()
    lm_path = None if args.no_lm else args.lm
    cfg = {"beam_size": 50, "max_labels_per_timestep": 10, "lm_path": lm_path}

    emissions = peaky_emissions(TEXT)
    stamps = np.arange(len(emissions))
    print(f"{len(TEXT)} characters, {len(emissions)} frames, LM: {lm_path}")

    fast = CTCBeamDecoder(**cfg)

    def run(cold: bool) -> tuple[float, float, object]:
        fast.reset()
        if cold and fast.lm is not None:
            fast.lm.clear()  # forget memoised LM scores, as a freshly built decoder
        t0, c0 = time.perf_counter(), time.process_time()
        decoded = fast.decode(emissions, stamps)
        return time.perf_counter() - t0, time.process_time() - c0, decoded

    # Wall time, and CPU time of this process (less sensitive to other jobs on a shared
    # machine; single-threaded code, so the two agree on an idle one).
    cold, warm = [], []
    for _ in range(args.repeats):
        *dt, out = run(cold=True)
        cold.append(dt)
        *dt, out = run(cold=False)  # the LM memo survives reset(): later windows reuse it
        warm.append(dt)
    fps = {
        name: [len(emissions) / statistics.median(t[i] for t in runs) for i in (0, 1)]
        for name, runs in (("cold", cold), ("warm", warm))
    }

    oracle = OracleBeamDecoder(**cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    labels, onsets = oracle.decode(emissions, stamps)
    oracle_fps = [
        len(emissions) / (time.perf_counter() - t0),
        len(emissions) / (time.process_time() - c0),
    ]

    same = out.labels.tolist() == labels and out.timestamps.tolist() == list(onsets)
    print(f"decoded: {out.text!r}")
    print(f"frames/s (wall | CPU time), median of {args.repeats} runs")
    for name in ("cold", "warm"):
        wall, cpu = fps[name]
        print(f"fast, {name} LM cache: {wall:8.0f} | {cpu:8.0f}")
    print(f"oracle:              {oracle_fps[0]:8.0f} | {oracle_fps[1]:8.0f}")
    for name in ("cold", "warm"):
        ratio = [fps[name][i] / oracle_fps[i] for i in (0, 1)]
        print(f"speed-up, {name}:      {ratio[0]:7.1f}x | {ratio[1]:7.1f}x")
    print(f"identical output: {same}")

    if args.workers > 1:
        n_items = 4 * args.workers
        batch = np.stack([peaky_emissions(TEXT, seed=s) for s in range(n_items)], axis=1)
        lengths = np.full(n_items, len(emissions))
        with CTCBeamDecoder(**cfg, num_workers=args.workers) as dec:
            dec.decode_batch(batch[:, : args.workers], lengths[: args.workers])  # start pool
            t0 = time.perf_counter()
            dec.decode_batch(batch, lengths)
            dt = time.perf_counter() - t0
        fps = n_items * len(emissions) / dt
        print(f"decode_batch, {args.workers} processes: {fps:8.0f} frames/s")
    if not same:
        sys.exit("outputs differ")


if __name__ == "__main__":
    main()
