"""Collect runs into per-user tables: ``python -m emg2qwerty_ssm.collect DIR... [options]``.

Every ``results.json`` under the given run directories (searched recursively, read with
:func:`emg2qwerty_ssm.results.read_results`) contributes its ``metrics`` entries. One table per
model: rows are users, columns ``<split>/<protocol>/<decoder>`` (e.g. ``test/paper/greedy``),
cells the chosen rate (``CER`` by default; ``missing`` / ``extra`` / ``substituted``), and a
``mean`` row over the users that have the column. When several runs give the same (model,
user, column), the newest file wins and a note says so.

Output: a console table (rich), ``--markdown FILE`` and ``--csv FILE`` (``-`` for stdout).
``--published`` adds the published per-user CERs of the model (docs/published.yaml) as a
column. At the end of a Hydra multirun the same tables are printed and written to
``<sweep dir>/summary.md`` and ``summary.csv`` by :class:`CollectCallback`.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.metrics import ALIASES
from emg2qwerty_ssm.results import FAILED_FILE, find_results, read_results

#: what a run needs for the per-user table
NEEDED_KEYS = ("model", "user", "metrics")
PUBLISHED_COLUMN = "published (greedy, fine-tuned)"


@dataclass
class UserTable:
    """One model's table: ``cells[user][column]`` = rate (%), plus the mean row."""

    model: str
    rate: str
    columns: list[str]
    cells: dict[str, dict[str, float]]
    notes: list[str] = field(default_factory=list)
    #: rows shown after the mean and not part of it (e.g. the zero-shot row)
    extra_rows: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def users(self) -> list[str]:
        return sorted(self.cells, key=_natural)

    def mean(self, column: str) -> tuple[float | None, int]:
        """Mean over the users that have ``column`` and how many they are."""
        values = [row[column] for row in self.cells.values() if _finite(row.get(column))]
        return (sum(values) / len(values) if values else None), len(values)

    def rows(self) -> list[list[str]]:
        """Formatted rows: one per user, then ``mean`` (``mean (k of n)`` when incomplete)."""
        out = [[u, *(_fmt(self.cells[u].get(c)) for c in self.columns)] for u in self.users]
        mean_row = ["mean"]
        for c in self.columns:
            value, n = self.mean(c)
            partial = f" ({n} of {len(self.cells)})" if 0 < n < len(self.cells) else ""
            mean_row.append(_fmt(value) + partial)
        extra = [[n, *(_fmt(r.get(c)) for c in self.columns)] for n, r in self.extra_rows.items()]
        return [*out, mean_row, *extra]


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if _finite(value) else "-"


def rate_of(entry: Mapping[str, Any], rate: str) -> float | None:
    """``rate`` from one metrics entry, also from files that only have emg2qwerty's names."""
    if rate in entry:
        return entry[rate]
    alias = {v: k for k, v in ALIASES.items()}.get(rate)
    return entry.get(alias) if alias else None


def load_runs(paths: Iterable[str | Path]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """``(path, results)`` of every readable run under ``paths``, and one line per problem."""
    files, problems = find_results(paths)
    runs = []
    for f in files:
        try:
            runs.append((f, read_results(f, required=NEEDED_KEYS)))
        except (OSError, ValueError) as err:
            problems.append(f"{f}: skipped: {err}")
    return runs, problems


def build_tables(
    runs: Sequence[tuple[Path, Mapping[str, Any]]],
    rate: str = "CER",
    columns: Sequence[str] | None = None,
) -> list[UserTable]:
    """One :class:`UserTable` per model (sorted by name); ``columns`` filters and orders."""
    tables: dict[str, UserTable] = {}
    origin: dict[tuple[str, str, str], tuple[float, Path]] = {}
    for path, results in runs:
        model, user = str(results["model"]), str(results["user"])
        table = tables.setdefault(model, UserTable(model, rate, [], {}))
        row = table.cells.setdefault(user, {})
        mtime = path.stat().st_mtime if path.exists() else 0.0
        for key, entry in (results.get("metrics") or {}).items():
            if columns is not None and key not in columns:
                continue
            value = rate_of(entry, rate) if isinstance(entry, Mapping) else None
            if value is None:
                continue
            seen = origin.get((model, user, key))
            if seen is not None:
                newer = mtime >= seen[0]
                table.notes.append(
                    f"{model} {user} {key}: in {seen[1]} and {path}; using the newer "
                    f"{path if newer else seen[1]}"
                )
                if not newer:
                    continue
            origin[(model, user, key)] = (mtime, path)
            row[key] = float(value)
            if key not in table.columns:
                table.columns.append(key)
    for table in tables.values():
        order = list(columns) if columns is not None else sorted(table.columns, key=_column_order)
        table.columns = [c for c in order if c in table.columns]
    return [tables[m] for m in sorted(tables)]


def _column_order(key: str) -> tuple:
    split, _, rest = key.partition("/")
    return ({"test": 0, "val": 1}.get(split, 2), _natural(rest))


def add_published(table: UserTable) -> bool:
    """Add the published per-user greedy CERs of ``table.model`` as a column (if any)."""
    from emg2qwerty_ssm.published import per_user

    values = per_user(table.model)
    if values is None or table.rate != "CER":
        return False
    for user, value in values.items():
        if user in table.cells:
            table.cells[user][PUBLISHED_COLUMN] = value
    table.columns.append(PUBLISHED_COLUMN)
    return True


# ----------------------------------------------------------------------------- output


def to_markdown(tables: Sequence[UserTable]) -> str:
    parts = []
    for t in tables:
        header = ["user", *t.columns]
        lines = [
            f"### {t.model} ({t.rate}, %)",
            "",
            "| " + " | ".join(header) + " |",
            "|---|" + "---:|" * len(t.columns),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in t.rows()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def to_csv(tables: Sequence[UserTable]) -> str:
    """Long format: model, user, column, rate, value (``user`` = ``mean`` for the mean row)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "user", "column", "rate", "value"])
    for t in tables:
        for user in t.users:
            for c in t.columns:
                value = t.cells[user].get(c)
                writer.writerow([t.model, user, c, t.rate, "" if value is None else value])
        for c in t.columns:
            mean, _ = t.mean(c)
            writer.writerow([t.model, "mean", c, t.rate, "" if mean is None else mean])
        for name, row in t.extra_rows.items():
            for c in t.columns:
                if row.get(c) is not None:
                    writer.writerow([t.model, name, c, t.rate, row[c]])
    return buf.getvalue()


def print_tables(tables: Sequence[UserTable], file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    stream = file if file is not None else sys.stdout
    # rich truncates to 80 columns when not on a terminal (logs, pipes): allow wide tables
    console = Console(file=file, width=None if stream.isatty() else 200)
    for t in tables:
        table = Table(title=f"{t.model} · {t.rate} (%) per user")
        table.add_column("user")
        for c in t.columns:
            table.add_column(c, justify="right")
        rows = t.rows()
        for i, row in enumerate(rows):
            table.add_row(*row, end_section=i in (len(t.cells) - 1, len(t.cells)))
        console.print(table)
        for note in t.notes[:3]:
            console.print(f"note: {note}", markup=False)
        if len(t.notes) > 3:
            console.print(f"note: {len(t.notes) - 3} more runs overlap (the newest file wins)")


def _emit(text: str, target: str | None) -> None:
    if target == "-":
        sys.stdout.write(text)
    elif target:
        atomic_write_text(target, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emg2qwerty_ssm.collect",
        description="Per-user tables (rows users, columns split/protocol/decoder) of runs.",
    )
    parser.add_argument("paths", nargs="+", help="run directories or results.json files")
    parser.add_argument(
        "--rate", default="CER", help="CER (default), missing, extra or substituted"
    )
    parser.add_argument("--columns", nargs="+", help="only these split/protocol/decoder keys")
    parser.add_argument("--markdown", metavar="FILE", help="write Markdown here ('-' = stdout)")
    parser.add_argument("--csv", metavar="FILE", help="write CSV here ('-' = stdout)")
    parser.add_argument("--published", action="store_true", help="add the published per-user CERs")
    args = parser.parse_args(argv)
    runs, problems = load_runs(args.paths)
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    if not runs:
        print("error: no usable results.json among the given paths", file=sys.stderr)
        return 1
    tables = build_tables(runs, args.rate, args.columns)
    if args.published:
        for t in tables:
            add_published(t)
    print_tables(tables, file=sys.stderr if "-" in (args.markdown, args.csv) else None)
    _emit(to_markdown(tables), args.markdown)
    _emit(to_csv(tables), args.csv)
    return 0


# ----------------------------------------------------------------------------- Hydra


class CollectCallback(Callback):
    """Hydra callback: at the end of a multirun, print the per-user tables of its jobs and
    write ``summary.md`` / ``summary.csv`` into the sweep directory."""

    def __init__(self, rate: str = "CER") -> None:
        self.rate = rate

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        import logging

        log = logging.getLogger(__name__)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        runs, problems = load_runs([sweep_dir])
        if not runs:
            log.warning("multirun %s: no results.json to collect (%s)", sweep_dir, problems)
            return
        tables = build_tables(runs, self.rate)
        print_tables(tables)
        md = atomic_write_text(sweep_dir / "summary.md", to_markdown(tables))
        atomic_write_text(sweep_dir / "summary.csv", to_csv(tables))
        failed = sorted(p.parent.name for p in sweep_dir.rglob(FAILED_FILE))
        if failed:
            log.warning("%d job(s) failed: %s (see their failed.json)", len(failed), failed)
        log.info("per-user tables of %d run(s) written to %s and summary.csv", len(runs), md)


if __name__ == "__main__":
    raise SystemExit(main())
