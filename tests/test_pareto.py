"""Pareto front on synthetic results.json files: the non-dominated set, outputs, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from emg2qwerty_ssm.pareto import REFERENCES, collect, main, non_dominated


def _write(root: Path, name: str, cer: float, macs: float, **extra: object) -> Path:
    d = root / name
    d.mkdir(parents=True)
    results = {
        "model": name,
        "params": 1000,
        "macs_per_second": macs,
        "CER": cer,
        "metrics": {"val/window/greedy": {"CER": cer + 1.0, "IER": 0, "DER": 0, "SER": 0}},
        **extra,
    }
    (d / "results.json").write_text(json.dumps(results))
    return d


def test_non_dominated_with_ties() -> None:
    pts = [(10.0, 1e6), (8.0, 2e6), (8.0, 3e6), (12.0, 5e5), (10.0, 1e6), (9.0, 2e6)]
    # (8, 3e6) is dominated by (8, 2e6) (equal CER, more MAC/s); (9, 2e6) by (8, 2e6);
    # the two identical (10, 1e6) points dominate nothing of each other and both stay.
    assert non_dominated(pts) == [True, True, False, True, True, False]
    assert non_dominated([]) == []
    assert non_dominated([(1.0, 1.0)]) == [True]


def test_collect_front_tables_and_figure(tmp_path: Path) -> None:
    runs = tmp_path / "multirun" / "sweep"
    _write(runs, "a", 30.0, 1e5)
    _write(runs, "b", 20.0, 1e6)
    _write(runs, "c", 25.0, 3e6)  # dominated by b
    _write(runs / "nested", "d", 10.0, 3e7)
    out = tmp_path / "report" / "front"
    assert main([str(tmp_path / "multirun"), "--out", str(out), "--references", "all"]) == 0
    with out.with_suffix(".csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["name"]: r["on_front"] for r in rows} == {
        "a": "True",
        "b": "True",
        "c": "False",
        "d": "True",
    }
    table = json.loads(out.with_suffix(".json").read_text())
    assert table["front"] == ["a", "b", "d"]  # sorted by MAC/s
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = out.with_suffix(".svg").read_text()
    # the legend says which points are measured here and which are published
    assert "measured here" in svg and "published" in svg


def test_metric_key_selects_split_protocol_decoder(tmp_path: Path) -> None:
    _write(tmp_path, "a", 30.0, 1e5)
    records, problems = collect([tmp_path], metric="val/window/greedy")
    assert problems == [] and records[0].cer == 31.0
    records, problems = collect([tmp_path], metric="test/paper/beam")
    assert records == []
    assert "test/paper/beam" in problems[0] and "val/window/greedy" in problems[0]


def test_bad_and_missing_files_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write(tmp_path, "good", 10.0, 1e6)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    _write(tmp_path, "nomacs", 10.0, 1e6)
    nomacs = tmp_path / "nomacs" / "results.json"
    nomacs.write_text(json.dumps({"CER": 3.0}))
    _write(tmp_path, "failed", 10.0, 1e6, status="failed", error="CUDA OOM")
    _write(tmp_path, "nan", float("nan"), 1e6)
    records, problems = collect([tmp_path, tmp_path / "absent"])
    assert [r.name for r in records] == ["good"]
    text = "\n".join(problems)
    for needle in (
        "broken/results.json",
        "nomacs/results.json: skipped: no 'macs_per_second'",
        "failed",
        "CUDA OOM",
        "non-finite",
        "absent: no such file",
    ):
        assert needle in text
    assert main([str(tmp_path), "--out", str(tmp_path / "o" / "p"), "--strict"]) == 1
    assert main([str(tmp_path / "absent")]) == 1
    assert "no usable results.json" in capsys.readouterr().err


def test_reference_points_match_docs_paper_md() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "paper.md").read_text()
    rows = {}
    for line in text.splitlines():
        m = re.match(
            r"\|\s*([^|]+?)\s*\|\s*([\d.–-]+)\s*\|\s*([\d.–-]+)\s*\|\s*([\d.]+) ([MG])\s*\|$", line
        )
        if m:
            scale = 1e6 if m[5] == "M" else 1e9
            num = lambda s: None if s in ("–", "-") else float(s)  # noqa: E731
            rows[m[1]] = (num(m[2]), num(m[3]), round(float(m[4]) * scale))
    assert len(rows) == len(REFERENCES) == 7
    published = sorted(rows.values(), key=lambda v: v[2])
    ours = sorted(
        ((r.cer_greedy, r.cer_lm, round(r.macs_per_second)) for r in REFERENCES), key=lambda v: v[2]
    )
    assert ours == published
