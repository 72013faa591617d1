"""A quick difficulty probe for the synthetic generator's knobs (run by hand).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_synthetic.py [--param NAME=VALUE ...]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_synthetic.py --cnn   # + a small CNN

Generates (in memory) one held-out user with 8 sessions and 4 other users with 4 sessions
each and cuts a window around every keystroke. The linear probe fits a ridge-regression key
classifier on log band power (5 time bins x 32 channels, standardised per session); the
optional CNN probe trains a two-layer 1-D CNN on the raw 410 ms windows (per-channel
standardised, +-1 band-rotation augmentation). Both report key accuracy on the held-out
user's last 2 sessions when trained on that user's first 6 sessions ("personalized") and on
the other users ("zero-shot"), next to the majority-class rate. They are stand-ins for the
real models (no sequence context, no language model), useful to see which way a knob moves
personalization vs zero-shot difficulty; they are not a CER.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from emg2qwerty_ssm.synthetic import dataset as ds
from emg2qwerty_ssm.synthetic.__main__ import _parse_params
from emg2qwerty_ssm.synthetic.params import PRESETS, DatasetConfig

FS = 2000
BINS_MS = ((-300, -170), (-170, -100), (-100, -30), (-30, 40), (40, 110))


def _features(emg: np.ndarray, press_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keystrokes, 5 * 32) log mean power per bin, and the mask of usable keystrokes."""
    idx = np.round(press_s * FS).astype(int)
    ok = (idx > 700) & (idx < len(emg) - 300)
    cumsum = np.vstack([np.zeros((1, emg.shape[1])), np.cumsum(emg.astype(np.float64) ** 2, 0)])
    cols = []
    for lo_ms, hi_ms in BINS_MS:
        lo, hi = idx[ok] + lo_ms * 2, idx[ok] + hi_ms * 2
        cols.append(np.log((cumsum[hi] - cumsum[lo]) / (hi - lo)[:, None] + 1e-3))
    return np.concatenate(cols, axis=1), ok


def _fit(x: np.ndarray, y: np.ndarray, n_classes: int, lam: float = 10.0) -> np.ndarray:
    x1 = np.hstack([x, np.ones((len(x), 1))])
    target = np.eye(n_classes)[y]
    return np.linalg.solve(x1.T @ x1 + lam * np.eye(x1.shape[1]), x1.T @ target)


def _accuracy(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.hstack([x, np.ones((len(x), 1))]) @ w).argmax(1) == y))


def _cnn_accuracy(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], n_classes: int
) -> float:
    """Train a small CNN on raw windows (N, 32, L) for 25 epochs; test accuracy."""
    import torch

    torch.manual_seed(0)
    x_train, y_train = torch.tensor(train[0]), torch.tensor(train[1])
    x_test, y_test = torch.tensor(test[0]), torch.tensor(test[1])
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv1d(32, 64, 21, stride=4),
        nn.ReLU(),
        nn.Conv1d(64, 64, 11, stride=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(4),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(256, n_classes),
    )
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(25):
        model.train()
        perm = torch.randperm(len(x_train))
        for i in range(0, len(perm), 64):
            batch = perm[i : i + 64]
            left, right = torch.randint(-1, 2, (2,)).tolist()
            xb = torch.cat(
                [x_train[batch, :16].roll(left, 1), x_train[batch, 16:].roll(right, 1)], 1
            )
            loss = nn.functional.cross_entropy(model(xb), y_train[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="start from this preset's knobs (demo has easier ones) instead of the defaults",
    )
    parser.add_argument("--session-seconds", type=float, default=90.0)
    parser.add_argument("--cnn", action="store_true", help="also run the CNN probe (~2 min)")
    args = parser.parse_args()
    config = DatasetConfig(
        n_users=5,
        n_heldout=1,
        sessions_per_user=4,
        heldout_sessions=8,
        session_seconds=args.session_seconds,
        params=_parse_params(
            args.param, PRESETS[args.preset].get("params") if args.preset else None
        ),
    )
    start = time.perf_counter()
    feats: dict[int, list[np.ndarray]] = {}
    keys: dict[int, list[np.ndarray]] = {}
    raw: dict[int, list[np.ndarray]] = {}
    for spec in ds.plan_sessions(config, args.seed):
        data, _, typing = ds.generate_session(config, args.seed, spec)
        emg = np.concatenate([data["emg_left"], data["emg_right"]], axis=1)
        x, ok = _features(emg, typing.press)
        feats.setdefault(spec.user_index, []).append((x - x.mean(0)) / (x.std(0) + 1e-6))
        keys.setdefault(spec.user_index, []).append(np.asarray(typing.keys)[ok])
        if args.cnn:
            idx = np.round(typing.press[ok] * FS).astype(int)
            scaled = emg / emg.std(axis=0, keepdims=True)
            windows = scaled[idx[:, None] + np.arange(-600, 220)]  # -300 .. +110 ms
            raw.setdefault(spec.user_index, []).append(windows.transpose(0, 2, 1).copy())
    classes = sorted(set(np.concatenate([k for ks in keys.values() for k in ks])))
    index = {c: i for i, c in enumerate(classes)}

    def stack(user_sessions: list[tuple[int, int]], source=feats) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([source[u][s] for u, s in user_sessions])
        y = np.array([index[k] for u, s in user_sessions for k in keys[u][s]])
        return x, y

    test = stack([(0, 6), (0, 7)])
    personal = stack([(0, s) for s in range(6)])
    generic = stack([(u, s) for u in range(1, 5) for s in range(4)])
    majority = np.bincount(test[1]).max() / len(test[1])
    w_personal = _fit(*personal, len(classes))
    w_generic = _fit(*generic, len(classes))
    print(f"params: {args.param or 'defaults'}; generated in {time.perf_counter() - start:.0f} s")
    print(
        f"key accuracy on held-out sessions: majority {majority:.3f}, "
        f"personalized {_accuracy(w_personal, *test):.3f}, "
        f"zero-shot {_accuracy(w_generic, *test):.3f}"
    )
    if args.cnn:
        test_raw = stack([(0, 6), (0, 7)], raw)
        personal_raw = stack([(0, s) for s in range(6)], raw)
        generic_raw = stack([(u, s) for u in range(1, 5) for s in range(4)], raw)
        cnn_personal = _cnn_accuracy(personal_raw, test_raw, len(classes))
        cnn_generic = _cnn_accuracy(generic_raw, test_raw, len(classes))
        print(f"CNN key accuracy: personalized {cnn_personal:.3f}, zero-shot {cnn_generic:.3f}")


if __name__ == "__main__":
    main()
