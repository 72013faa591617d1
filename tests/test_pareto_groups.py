"""The front with spread: runs grouped by model (mean, sd over seeds), the front on the means,
the monotonicity check, and the single-seed case (synthetic results.json files)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from emg2qwerty_ssm.pareto import Record, group_records, main, mark_front, monotonicity


def _run(root: Path, model: str, seed: int | None, cer: float, macs: float) -> None:
    d = root / f"{model}_seed{seed}"
    d.mkdir(parents=True)
    config = {} if seed is None else {"seed": seed}
    results = {"model": model, "params": 100, "macs_per_second": macs, "CER": cer,
               "config": config, "wall_time_s": 10.0 + (seed or 0)}  # fmt: skip
    (d / "results.json").write_text(json.dumps(results))


def _rec(model: str, seed: int, cer: float, macs: float) -> Record:
    return Record(name=f"{model}_seed{seed}", cer=cer, macs_per_second=macs, model=model, seed=seed)


def _rows(stem: Path) -> dict[str, dict[str, str]]:
    with stem.with_suffix(".csv").open() as fh:
        return {r["name"]: r for r in csv.DictReader(fh)}


def test_groups_by_model_with_mean_sample_sd_and_seeds(tmp_path: Path) -> None:
    for seed, cer in ((2, 30.0), (0, 20.0), (1, 25.0)):  # written out of seed order
        _run(tmp_path / "runs", "a", seed, cer, 1e6)
    _run(tmp_path / "runs", "b", 0, 10.0, 3e6)
    _run(tmp_path / "runs", "b", 1, 14.0, 3e6)
    out = tmp_path / "out" / "front"
    assert main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    rows = _rows(out)
    assert set(rows) == {"a", "b"}
    a = rows["a"]
    assert a["n"] == "3" and a["seeds"] == "0;1;2"
    assert a["cer_per_seed"] == "20.0000;25.0000;30.0000"
    assert float(a["cer_mean"]) == pytest.approx(25.0)
    assert float(a["cer_sd"]) == pytest.approx(5.0)  # n - 1; the population sd would be 4.08
    assert float(rows["b"]["cer_sd"]) == pytest.approx(math.sqrt(8.0))
    assert float(a["wall_time_s_mean"]) == pytest.approx(11.0)
    table = json.loads(out.with_suffix(".json").read_text())
    (model_a,) = [m for m in table["models"] if m["name"] == "a"]
    assert model_a["cer_per_seed"] == [20.0, 25.0, 30.0] and model_a["seeds"] == [0, 1, 2]
    assert [r["seed"] for r in model_a["runs"]] == [0, 1, 2]
    assert table["front"] == ["a", "b"]  # a cheaper, b better
    svg = out.with_suffix(".svg").read_text()
    assert "Pareto front (means)" in svg and "one seed" in svg and "published" in svg


def test_front_is_computed_on_the_means_not_the_best_seed() -> None:
    records = [
        _rec("cheap", 0, 40.0, 5e5), _rec("cheap", 1, 40.0, 5e5),
        _rec("a", 0, 10.0, 1e6), _rec("a", 1, 50.0, 1e6),  # mean 30
        _rec("b", 0, 20.0, 2e6), _rec("b", 1, 22.0, 2e6),  # mean 21
        _rec("lucky", 0, 5.0, 3e6), _rec("lucky", 1, 45.0, 3e6),  # mean 25, best single run
    ]  # fmt: skip
    groups, notes = group_records(records)
    assert notes == [] and [g.name for g in groups] == ["cheap", "a", "b", "lucky"]
    front = mark_front(groups)
    # per run, lucky's 5% would be on the front; its mean (25) is dominated by b (21, 2e6)
    assert [g.name for g in front] == ["cheap", "a", "b"]
    assert not groups[3].on_front and not any(r.on_front for r in groups[3].runs)
    assert min(records, key=lambda r: r.cer).model == "lucky"


def test_more_compute_clearly_hurts_only_beyond_the_two_sds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    records = [
        _rec("small", 0, 19.0, 1e6), _rec("small", 1, 21.0, 1e6),  # 20 +- 1.4
        _rec("mid", 0, 20.0, 4e6), _rec("mid", 1, 24.0, 4e6),  # 22 +- 2.8: within the spread
        _rec("big", 0, 29.0, 1e7), _rec("big", 1, 31.0, 1e7),  # 30 +- 1.4: clearly worse
    ]  # fmt: skip
    groups, _ = group_records(records)
    lines = monotonicity(groups)
    assert len(lines) == 2, lines
    assert lines[0].startswith("more compute clearly hurts: big (10 M MAC/s, CER 30.0 +- 1.4 %")
    assert lines[0].endswith("vs small (1 M MAC/s, CER 20.0 +- 1.4 %, n=2)")
    assert lines[1].startswith("more compute clearly hurts: big") and "vs mid" in lines[1]
    assert not any(line.split(": ")[1].startswith("mid") for line in lines)
    # a monotone set says so
    for i, seed in enumerate((0, 1)):
        _run(tmp_path, "x", seed, 40.0 + i, 1e6)
        _run(tmp_path, "y", seed, 30.0 + i, 1e7)
    assert main([str(tmp_path), "--out", str(tmp_path / "o" / "f")]) == 0
    out = capsys.readouterr().out
    assert "monotone within the spread" in out and "hurts" not in out
    assert "| x | 1,000,000 | 100 | 2 | 40.5 +- 0.7 | 0,1 | yes |" in out


def test_single_seed_input_has_no_sd_and_no_clear_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _run(tmp_path, "small", None, 20.0, 1e6)  # no seed in its config
    _run(tmp_path, "big", 0, 25.0, 1e7)
    out = tmp_path / "o" / "front"
    assert main([str(tmp_path), "--out", str(out)]) == 0
    rows = _rows(out)
    assert rows["small"]["cer_sd"] == "" and rows["small"]["n"] == "1"
    assert rows["small"]["seeds"] == ""
    table = json.loads(out.with_suffix(".json").read_text())
    assert all(m["cer_sd"] is None for m in table["models"])
    (line,) = table["monotonicity"]
    assert line.startswith("more compute hurts (a single run: spread unknown): big")
    assert "clearly" not in capsys.readouterr().out


def test_a_seed_twice_in_one_model_is_noted() -> None:
    groups, notes = group_records([_rec("a", 0, 10.0, 1e6), _rec("a", 0, 12.0, 1e6)])
    assert groups[0].n == 2
    assert notes == ["a: seed 0 occurs 2 times (a_seed0, a_seed0)"]


def test_same_name_other_cost_is_another_model() -> None:
    groups, _ = group_records([_rec("a", 0, 10.0, 1e6), _rec("a", 1, 12.0, 2e6)])
    assert [(g.name, g.n) for g in groups] == [("a", 1), ("a", 1)]
