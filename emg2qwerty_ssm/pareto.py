"""The accuracy vs. compute trade-off: collect runs, find the Pareto front, draw the figure.

Reads ``results.json`` files (one per run, written by the trainer) from any set of files or
directories (searched recursively), picks one CER per run (the flat ``CER`` key, i.e. the test
CER under the paper protocol, or ``metrics["<split>/<protocol>/<decoder>"]["CER"]``), computes
the non-dominated set on (CER, MAC/s), both minimised, and writes ``<stem>.csv``,
``<stem>.json``, ``<stem>.png`` and ``<stem>.svg``. The figure shows our runs (measured here)
together with the published reference points of docs/published.yaml (real emg2qwerty
data)::

    python scripts/pareto.py multirun/ --metric test/paper/greedy --out reports/pareto
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emg2qwerty_ssm.published import Reference, references
from emg2qwerty_ssm.results import RESULTS_FILE as RESULTS_NAME
from emg2qwerty_ssm.results import find_results, lookup, read_results

__all__ = ["find_results", "collect", "mark_front", "non_dominated", "REFERENCES"]


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


def mark_front(records: list[Record]) -> list[Record]:
    """Set ``on_front`` on every record; return the front sorted by MAC/s."""
    mask = non_dominated([(r.cer, r.macs_per_second) for r in records])
    for r, m in zip(records, mask, strict=True):
        r.on_front = m
    return sorted((r for r in records if r.on_front), key=lambda r: (r.macs_per_second, r.cer))


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
    return Record(
        name=name,
        cer=cer,
        macs_per_second=macs,
        params=int(params) if params is not None else None,
        model=results.get("model"),
        path=str(path),
        extra={k: results[k] for k in ("user", "decoder", "config_hash") if k in results},
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

_COLUMNS = ("name", "model", "cer", "macs_per_second", "params", "on_front", "path")


def write_tables(
    records: Sequence[Record], out_stem: str | Path, meta: Mapping[str, Any] | None = None
) -> list[Path]:
    """``<stem>.csv`` (one row per run, front first) and ``<stem>.json`` (runs + meta)."""
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(records, key=lambda r: (not r.on_front, r.macs_per_second, r.cer))
    csv_path, json_path = stem.with_suffix(".csv"), stem.with_suffix(".json")
    with csv_path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_COLUMNS)
        for r in rows:
            writer.writerow(["" if getattr(r, c) is None else getattr(r, c) for c in _COLUMNS])
    payload = {
        **(meta or {}),
        "front": [r.name for r in rows if r.on_front],
        "runs": [asdict(r) for r in rows],
    }
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    return [csv_path, json_path]


def plot(
    records: Sequence[Record],
    out_stem: str | Path,
    title: str = "CER vs. compute",
    references: str = "greedy",
    ylabel: str = "CER (%)",
) -> list[Path]:
    """Draw ``<stem>.png`` and ``<stem>.svg``: log MAC/s on x, CER on y.

    ``references``: which published CERs to show: "greedy", "lm", "all" or "none".
    """
    if references not in ("greedy", "lm", "all", "none"):
        raise ValueError(f"references={references!r}; expected greedy, lm, all or none")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    ours = [r for r in records if not r.on_front]
    front = sorted((r for r in records if r.on_front), key=lambda r: r.macs_per_second)
    if ours:
        ax.scatter(
            [r.macs_per_second for r in ours],
            [r.cer for r in ours],
            s=28,
            color="tab:blue",
            alpha=0.5,
            label="measured here: runs",
        )
    if front:
        ax.step(
            [r.macs_per_second for r in front],
            [r.cer for r in front],
            where="post",
            color="tab:blue",
            lw=1.5,
        )
        ax.scatter(
            [r.macs_per_second for r in front],
            [r.cer for r in front],
            s=45,
            color="tab:blue",
            edgecolor="black",
            zorder=3,
            label="measured here: Pareto front",
        )
        models = [r.model for r in records]
        for r in front:
            # the model name when it identifies the run, else the run (directory) name
            unique = r.model is not None and models.count(r.model) == 1
            ax.annotate(
                str(r.model) if unique else r.name[:40],
                (r.macs_per_second, r.cer),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    kinds = {
        "greedy": ("cer_greedy",),
        "lm": ("cer_lm",),
        "all": ("cer_greedy", "cer_lm"),
        "none": (),
    }[references]
    colors = {"paper": "tab:red", "emg2qwerty baseline": "tab:green", "prior work": "tab:purple"}
    for source, color in colors.items():
        for attr in kinds:
            pts = [(ref, getattr(ref, attr)) for ref in REFERENCES if ref.source == source]
            pts = [(ref, y) for ref, y in pts if y is not None]
            if not pts:
                continue
            lm = attr == "cer_lm"
            ax.scatter(
                [ref.macs_per_second for ref, _ in pts],
                [y for _, y in pts],
                marker="s" if lm else "D",
                s=40,
                facecolor="none" if lm else color,
                edgecolor=color,
                label=f"published on real data ({source}), {'with char LM' if lm else 'greedy'}",
            )
            for ref, y in pts:
                ax.annotate(
                    ref.label,
                    (ref.macs_per_second, y),
                    fontsize=7,
                    color=color,
                    xytext=(4, -9),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.set_xlabel("MAC/s of streaming 2 kHz input (cost convention of docs/models.md)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    outs = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for out in outs:
        fig.savefig(out, dpi=150)
    plt.close(fig)
    return outs


def report(
    records: list[Record],
    out_stem: str | Path,
    title: str,
    references: str = "greedy",
    meta: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Mark the front, write the tables and the figure; return the written files."""
    mark_front(records)
    return [
        *write_tables(records, out_stem, meta),
        *plot(records, out_stem, title=title, references=references),
    ]


def format_front(records: Sequence[Record]) -> str:
    """A short text table of the front (for the terminal / README)."""
    front = sorted((r for r in records if r.on_front), key=lambda r: r.macs_per_second)
    lines = ["| run | model | MAC/s | params | CER (%) |", "|---|---|---|---|---|"]
    for r in front:
        params = f"{r.params:,}" if r.params is not None else "-"
        lines.append(
            f"| {r.name} | {r.model or '-'} | {r.macs_per_second:,.0f} | {params} | {r.cer:.2f} |"
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
    outs = report(records, args.out, title, args.references, meta={"metric": metric})
    print(format_front(records))
    print(f"{len(records)} runs, {sum(r.on_front for r in records)} on the front; wrote:")
    for o in outs:
        print(f"  {o}")
    return 1 if (problems and args.strict) else 0


if __name__ == "__main__":
    raise SystemExit(main())
