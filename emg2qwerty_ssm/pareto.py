"""The accuracy vs. compute trade-off: collect runs, find the Pareto front, draw the figure.

Reads ``results.json`` files (one per run, written by the trainer) from any set of files or
directories (searched recursively), picks one CER per run (the flat ``CER`` key, i.e. the test
CER under the paper protocol, or ``metrics["<split>/<protocol>/<decoder>"]["CER"]``) and groups
the runs by model (name and MAC/s): one point per model, the mean CER over its runs (seeds)
with the sample standard deviation (n - 1; none for a single run). The front is the
non-dominated set of (mean CER, MAC/s), both minimised. Writes ``<stem>.csv``, ``<stem>.json``
(mean, sd, n, seeds and every seed's CER), ``<stem>.png`` and ``<stem>.svg``. The figure shows
our models (measured here: mean +- sd, each seed a faint point) together with the published
reference points of docs/published.yaml (real emg2qwerty data). It also prints where more
compute clearly hurts: a model with more MAC/s whose mean CER is higher than a cheaper one's
by more than the two sds together::

    python scripts/pareto.py multirun/ --metric test/paper/greedy --out reports/pareto
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.published import Reference, references
from emg2qwerty_ssm.results import RESULTS_FILE as RESULTS_NAME
from emg2qwerty_ssm.results import find_results, lookup, read_results

__all__ = [
    "find_results",
    "collect",
    "group_records",
    "mark_front",
    "monotonicity",
    "non_dominated",
    "REFERENCES",
]


#: Fig. 2A's published points, from docs/published.yaml (real emg2qwerty data, CER %)
REFERENCES: tuple[Reference, ...] = references()


@dataclass
class Record:
    """One run: its CER (%) under the chosen metric and its cost."""

    name: str
    cer: float
    macs_per_second: float
    params: int | None = None
    model: str | None = None
    path: str | None = None
    on_front: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    wall_time_s: float | None = None


@dataclass
class Group:
    """One model's runs (one per seed): the point of the front is their mean CER."""

    name: str  # the model name, or the run's name for a run that names no model
    macs_per_second: float
    runs: list[Record]
    params: int | None = None
    on_front: bool = False

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def cers(self) -> list[float]:
        return [r.cer for r in self.runs]

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.cers)

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (n - 1); None for a single run (no spread known)."""
        return statistics.stdev(self.cers) if self.n >= 2 else None

    def describe(self) -> str:
        """``tc_s4_m (4.32 M MAC/s, CER 33.0 +- 2.1 %, n=3)`` for messages."""
        spread = f" +- {self.sd:.1f}" if self.sd is not None else ""
        return (
            f"{self.name} ({self.macs_per_second / 1e6:.3g} M MAC/s, "
            f"CER {self.mean:.1f}{spread} %, n={self.n})"
        )


def group_records(records: Sequence[Record]) -> tuple[list[Group], list[str]]:
    """The runs grouped by model (name and MAC/s), sorted by MAC/s, each group's runs by seed;
    and one note per seed that occurs twice in a group (both runs are kept and counted).

    A run without a model name is its own group (Optuna trials: each a different model).
    Event-driven models (EGRU, SNN) measure their MAC/s per run, so their seeds stay apart.
    """
    by_key: dict[tuple[str, float], list[Record]] = {}
    for r in records:
        by_key.setdefault((r.model or r.name, r.macs_per_second), []).append(r)
    groups, notes = [], []
    for (name, macs), runs in by_key.items():
        runs.sort(key=lambda r: (r.seed is None, r.seed or 0, r.name))
        seeds = [r.seed for r in runs if r.seed is not None]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}):
            same = [r.path or r.name for r in runs if r.seed == seed]
            notes.append(f"{name}: seed {seed} occurs {len(same)} times ({', '.join(same)})")
        params = next((r.params for r in runs if r.params is not None), None)
        groups.append(Group(name=name, macs_per_second=macs, runs=runs, params=params))
    groups.sort(key=lambda g: (g.macs_per_second, g.name))
    return groups, notes


# ----------------------------------------------------------------------------- the front


def non_dominated(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Mask of the points no other point dominates, all objectives minimised.

    ``q`` dominates ``p`` when it is no worse in every objective and better in at least one,
    so identical points do not dominate each other and are all kept. Quadratic in the number
    of points, which is fine for sweeps (thousands of runs at most).
    """
    mask = []
    for p in points:
        dominated = any(
            all(qi <= pi for qi, pi in zip(q, p, strict=True)) and q != p for q in points
        )
        mask.append(not dominated)
    return mask


def mark_front(groups: Sequence[Group]) -> list[Group]:
    """Set ``on_front`` on every group (and its runs) by (mean CER, MAC/s); return the front
    sorted by MAC/s."""
    mask = non_dominated([(g.mean, g.macs_per_second) for g in groups])
    for g, m in zip(groups, mask, strict=True):
        g.on_front = m
        for r in g.runs:
            r.on_front = m
    return sorted((g for g in groups if g.on_front), key=lambda g: (g.macs_per_second, g.mean))


def monotonicity(groups: Sequence[Group]) -> list[str]:
    """One line per pair where more MAC/s gives a higher mean CER by more than the two sds.

    The front is "monotone within its spread" when this is empty. A group of one run has no
    known spread: its pairs are reported with that said, never as "clearly".
    """
    lines = []
    for cheap in groups:
        for costly in groups:
            if costly.macs_per_second <= cheap.macs_per_second:
                continue
            margin = (cheap.sd or 0.0) + (costly.sd or 0.0)
            if costly.mean - cheap.mean <= margin:
                continue
            what = (
                "more compute clearly hurts"
                if cheap.sd is not None and costly.sd is not None
                else "more compute hurts (a single run: spread unknown)"
            )
            lines.append(f"{what}: {costly.describe()} vs {cheap.describe()}")
    return lines


# ----------------------------------------------------------------------------- reading runs


def cer_of(results: Mapping[str, Any], metric: str | None) -> float:
    """CER (%) of one results dict; ``metric`` None = the flat ``CER`` key (test, paper
    protocol), else any key of results.json's grammar (:func:`emg2qwerty_ssm.results.lookup`:
    ``test/paper/greedy``, ``val/CER``, ...). KeyError says what is missing."""
    try:
        return lookup(results, metric or "CER")
    except KeyError as err:
        hint = "" if metric else " (pass --metric <split>/<protocol>/<decoder>)"
        raise KeyError(f"{err.args[0]}{hint}") from None


def record_from_results(path: Path, results: Mapping[str, Any], metric: str | None) -> Record:
    """A :class:`Record` from one parsed results.json; ValueError/KeyError name the field."""
    if results.get("status", "ok") not in ("ok", "completed", "success"):
        raise ValueError(f"run status is {results.get('status')!r}: {results.get('error', '')}")
    if "macs_per_second" not in results:
        raise KeyError("no 'macs_per_second' key")
    cer = cer_of(results, metric)
    macs = float(results["macs_per_second"])
    if not (math.isfinite(cer) and math.isfinite(macs) and macs > 0):
        raise ValueError(f"non-finite or non-positive value: CER={cer}, macs_per_second={macs}")
    name = path.parent.name if path.name == RESULTS_NAME else path.stem
    params = results.get("params")
    seed = (results.get("config") or {}).get("seed")
    wall = results.get("wall_time_s")
    return Record(
        name=name,
        cer=cer,
        macs_per_second=macs,
        params=int(params) if params is not None else None,
        model=results.get("model"),
        path=str(path),
        extra={k: results[k] for k in ("user", "decoder", "config_hash") if k in results},
        seed=int(seed) if isinstance(seed, int) else None,
        wall_time_s=float(wall) if isinstance(wall, int | float) else None,
    )


def collect(
    paths: Iterable[str | Path], metric: str | None = None
) -> tuple[list[Record], list[str]]:
    """Records of all readable runs under ``paths`` and one problem line per skipped file."""
    files, problems = find_results(paths)
    records: list[Record] = []
    for f in files:
        try:
            results = read_results(f, required=())
            records.append(record_from_results(f, results, metric))
        except (OSError, ValueError, KeyError, TypeError) as e:
            reason = e.args[0] if isinstance(e, KeyError) and e.args else e
            problems.append(f"{f}: skipped: {reason}")
    return records, problems


# ----------------------------------------------------------------------------- outputs

_COLUMNS = (
    "name",
    "macs_per_second",
    "params",
    "n",
    "cer_mean",
    "cer_sd",
    "seeds",
    "cer_per_seed",
    "wall_time_s_mean",
    "on_front",
)


def _joined(values: Iterable[Any]) -> str:
    return ";".join(
        "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in values
    )


def _mean_wall(g: Group) -> float | None:
    walls = [r.wall_time_s for r in g.runs if r.wall_time_s is not None]
    return statistics.fmean(walls) if walls else None


def write_tables(
    groups: Sequence[Group],
    out_stem: str | Path,
    meta: Mapping[str, Any] | None = None,
) -> list[Path]:
    """``<stem>.csv`` (one row per model: mean, sd, n, seeds, each seed's CER; front first)
    and ``<stem>.json`` (the same per model with its runs, the monotonicity check, meta)."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(groups, key=lambda g: (not g.on_front, g.macs_per_second, g.mean))
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for g in rows:
        sd, wall = g.sd, _mean_wall(g)
        writer.writerow(
            [
                g.name,
                g.macs_per_second,
                "" if g.params is None else g.params,
                g.n,
                g.mean,
                "" if sd is None else sd,
                _joined(g.seeds),
                _joined(g.cers),
                "" if wall is None else round(wall, 1),
                g.on_front,
            ]
        )
    atomic_write_text(csv_path, buffer.getvalue())
    payload = {
        **(meta or {}),
        "front": [g.name for g in rows if g.on_front],
        "monotonicity": monotonicity(groups),
        "models": [
            {
                "name": g.name,
                "macs_per_second": g.macs_per_second,
                "params": g.params,
                "n": g.n,
                "cer_mean": g.mean,
                "cer_sd": g.sd,
                "seeds": g.seeds,
                "cer_per_seed": g.cers,
                "wall_time_s_mean": _mean_wall(g),
                "on_front": g.on_front,
                "runs": [asdict(r) for r in g.runs],
            }
            for g in rows
        ],
    }
    atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n")
    return [csv_path, json_path]


def report(
    records: list[Record],
    out_stem: str | Path,
    title: str,
    references: str = "greedy",
    meta: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Group the runs by model, mark the front on the means, write the tables and the figure;
    return the written files."""
    from emg2qwerty_ssm.pareto_plot import plot

    groups, notes = group_records(records)
    mark_front(groups)
    meta = {**(meta or {}), **({"notes": notes} if notes else {})}
    return [
        *write_tables(groups, out_stem, meta),
        *plot(groups, out_stem, title=title, references=references),
    ]


def format_groups(groups: Sequence[Group]) -> str:
    """A short text table of every model (for the terminal / README), by MAC/s."""
    lines = [
        "| model | MAC/s | params | n | CER mean +- sd (%) | seeds | front |",
        "|---|---:|---:|---:|---:|---|:-:|",
    ]
    for g in sorted(groups, key=lambda g: g.macs_per_second):
        params = f"{g.params:,}" if g.params is not None else "-"
        spread = f" +- {g.sd:.1f}" if g.sd is not None else ""
        seeds = ",".join("?" if s is None else str(s) for s in g.seeds)
        lines.append(
            f"| {g.name} | {g.macs_per_second:,.0f} | {params} | {g.n} | "
            f"{g.mean:.1f}{spread} | {seeds} | {'yes' if g.on_front else ''} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="results.json files or run directories")
    parser.add_argument(
        "--metric",
        default=None,
        help="metrics key <split>/<protocol>/<decoder> (default: the flat test CER key)",
    )
    parser.add_argument("--out", default="pareto/pareto", help="output stem (default %(default)s)")
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--references",
        default="greedy",
        choices=("greedy", "lm", "all", "none"),
        help="published reference points to draw (default %(default)s)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any file was skipped")
    args = parser.parse_args(argv)
    records, problems = collect(args.paths, args.metric)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not records:
        print("error: no usable results.json among the given paths", file=sys.stderr)
        return 1
    metric = args.metric or "CER (test, paper protocol)"
    title = args.title or f"CER vs. MAC/s: {metric}"
    from emg2qwerty_ssm.pareto_plot import plot

    groups, notes = group_records(records)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    front = mark_front(groups)
    meta = {"metric": metric, **({"notes": notes} if notes else {})}
    outs = write_tables(groups, args.out, meta)
    outs += plot(groups, args.out, title=title, references=args.references)
    print(format_groups(groups))
    for line in monotonicity(groups) or [
        "monotone within the spread: no model with more MAC/s has a clearly higher mean CER"
    ]:
        print(line)
    print(f"{len(records)} runs of {len(groups)} models, {len(front)} on the front; wrote:")
    for o in outs:
        print(f"  {o}")
    return 1 if (problems and args.strict) else 0


if __name__ == "__main__":
    raise SystemExit(main())
