"""``predictions.jsonl``: what the model typed, beside the target, per evaluated session.

Every final evaluation (``python -m emg2qwerty_ssm.train``) writes ``<run dir>/predictions.jsonl``
with one JSON object per line, one line per (evaluation, session)::

    {"key": "test/paper/greedy", "split": "test", "protocol": "paper", "decoder": "greedy",
     "session": "<file stem>", "CER": 41.2, "missing": 30.1, "extra": 2.0, "substituted": 9.1,
     "target_chars": 380, "predicted_chars": 154,
     "windows": [{"prediction": "...", "target": "...", "CER": 40.0}, ...]}

The rates are percentages of the session's target characters, summed over its windows (a
micro-average, as for the run's CER); ``missing`` counts target characters the model did not
emit, ``extra`` characters it emitted beyond the target (see :mod:`emg2qwerty_ssm.metrics`).

``python -m emg2qwerty_ssm.predictions RUN_DIR [--key KEY] [--worst N]`` prints the sessions
with the highest CER and their texts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from emg2qwerty_ssm.atomic_io import atomic_write
from emg2qwerty_ssm.metrics import edit_counts, error_rates

PREDICTIONS_FILE = "predictions.jsonl"


def item_sessions(dataset: Any) -> list[str] | None:
    """The session (file stem) of each item of an evaluation dataset, in loader order.

    Evaluation datasets are a ``ConcatDataset`` of one ``WindowedEMGDataset`` per session (or
    one such dataset); anything else gives None and the items are grouped as ``"?"``.
    """
    parts = getattr(dataset, "datasets", None)
    parts = list(parts) if parts is not None else [dataset]
    names: list[str] = []
    for part in parts:
        path = getattr(part, "hdf5_path", None)
        if path is None:
            return None
        names += [Path(path).stem] * len(part)
    return names


def session_records(
    key: str, dataset: Any, pairs: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """One record per session from the ``(prediction, target)`` texts of ``key``'s items."""
    split, protocol, decoder = (key.split("/") + ["", "", ""])[:3]
    sessions = item_sessions(dataset)
    if sessions is None or len(sessions) != len(pairs):
        sessions = ["?"] * len(pairs)
    grouped: dict[str, list[tuple[str, str]]] = {}
    for session, pair in zip(sessions, pairs, strict=True):
        grouped.setdefault(session, []).append(pair)
    records = []
    for session, items in grouped.items():
        totals = {"missing": 0, "extra": 0, "substituted": 0}
        windows = []
        for prediction, target in items:
            counts = edit_counts(prediction, target)
            for name, n in counts.items():
                totals[name] += n
            window_rates = error_rates(
                counts["missing"], counts["extra"], counts["substituted"], len(target)
            )
            windows.append({"prediction": prediction, "target": target, "CER": window_rates["CER"]})
        target_chars = sum(len(t) for _, t in items)
        rates = error_rates(totals["missing"], totals["extra"], totals["substituted"], target_chars)
        records.append(
            {
                "key": key,
                "split": split,
                "protocol": protocol,
                "decoder": decoder,
                "session": session,
                **{name: rates[name] for name in ("CER", "missing", "extra", "substituted")},
                "target_chars": target_chars,
                "predicted_chars": sum(len(p) for p, _ in items),
                "windows": windows,
            }
        )
    return records


def _json_line(record: dict[str, Any]) -> str:
    def safe(v: Any) -> Any:  # NaN (a session without target characters) is not JSON
        return None if isinstance(v, float) and v != v else v

    return json.dumps({k: safe(v) for k, v in record.items()}, ensure_ascii=False)


def write_predictions(run_dir: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``run_dir/predictions.jsonl`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    with atomic_write(path, "w") as f:
        for record in records:
            f.write(_json_line(record) + "\n")
    return path


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``predictions.jsonl`` (or of the one inside a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {PREDICTIONS_FILE} at {path}")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON line: {err}") from err
    return records


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emg2qwerty_ssm.predictions",
        description="Show the sessions a run decoded worst, with predicted and target text.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--key", help="evaluation, e.g. test/paper/greedy (default: all)")
    parser.add_argument("--worst", type=int, default=3, help="sessions to show per evaluation")
    args = parser.parse_args(argv)
    records = read_predictions(args.run_dir)
    keys = sorted({r["key"] for r in records})
    if args.key and args.key not in keys:
        parser.error(f"no evaluation {args.key!r} in {args.run_dir}; there are {keys}")
    for key in [args.key] if args.key else keys:
        rows = [r for r in records if r["key"] == key]
        rows.sort(key=lambda r: -(r["CER"] if r["CER"] is not None else -1.0))
        print(f"== {key}: {len(rows)} sessions")
        for r in rows[: args.worst]:
            print(
                f"-- {r['session']}: CER {r['CER']:.1f} (missing {r['missing']:.1f}, extra "
                f"{r['extra']:.1f}, substituted {r['substituted']:.1f}); emitted "
                f"{r['predicted_chars']} of {r['target_chars']} target characters"
            )
            for w in r["windows"][:2]:
                print(f"   target:    {w['target']!r}\n   predicted: {w['prediction']!r}")


if __name__ == "__main__":
    main()
