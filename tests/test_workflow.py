"""The researcher's workflow: quiet logs, predictions.jsonl, the per-user collector, the
published numbers as data, and the paper recipe end to end at smoke scale."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trainer_helpers import REPO_ROOT, cache_dir, compose_cfg, run_cli

from emg2qwerty_ssm import collect
from emg2qwerty_ssm.predictions import read_predictions, session_records
from emg2qwerty_ssm.published import load_published, per_user, references
from emg2qwerty_ssm.train import train


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return cache_dir(tmp_path_factory)


# ----------------------------------------------------------------------------- quiet logs


@pytest.mark.slow
def test_smoke_multirun_prints_each_line_once_and_no_noise(tmp_path: Path, cache: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "debug=smoke", "user=synth_user0", f"hydra.sweep.dir={sweep}"], cache)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.strip() and ln[0].isalnum() or ln.startswith("[")]
    # Hydra prefixes every log line with its time: the same message twice is a duplicate
    messages = [ln.split("] - ", 1)[-1] for ln in lines if "] - " in ln]
    dupes = {m for m in messages if messages.count(m) > 1}
    assert not dupes, dupes
    for noise in ("Tip:", "srun", "LeafSpec", "Warning", "FLOPs", "INFO: "):
        assert noise not in out, f"{noise!r} in the output:\n{out[-3000:]}"
    assert "validation epoch 1 (step 6): val/CER" in out
    assert "model tc_s4_small: 388,437 parameters" in out
    job = next(sweep.glob("0_*"))
    assert "validation epoch 0" in (job / "train.log").read_text()
    # the multirun ends with the per-user table (console and files)
    assert "CER (%) per user" in out
    assert "| synth_user0 |" in (sweep / "summary.md").read_text()
    assert (sweep / "summary.csv").read_text().startswith("model,user,column,rate,value")
    # predictions.jsonl: texts and per-session CER of every evaluation
    records = read_predictions(job)
    assert {r["key"] for r in records} == {
        f"{s}/{p}/greedy" for s in ("val", "test") for p in ("paper", "session")
    }
    for r in records:
        assert r["session"] != "?" and r["windows"] and "target" in r["windows"][0]
        assert r["target_chars"] == sum(len(w["target"]) for w in r["windows"])


def test_noise_filters_and_unused_gpu_warning(monkeypatch, caplog) -> None:
    import warnings

    import torch
    from optuna.exceptions import ExperimentalWarning

    from emg2qwerty_ssm import logs

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        logs.install_filters()
        warnings.warn("multi-objective sampler is experimental", ExperimentalWarning, stacklevel=1)
        warnings.warn(
            "The `srun` command is available on your system but is not used", stacklevel=1
        )
        warnings.warn("something the user should see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something the user should see"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "FakeGPU")
    with caplog.at_level(logging.WARNING, logger="emg2qwerty_ssm.train"):
        logs.warn_unused_gpu({"accelerator": "auto"})
        assert not caplog.text
        logs.warn_unused_gpu({"accelerator": "cpu"})
    assert "CUDA is available (FakeGPU) but trainer.accelerator=cpu" in caplog.text
    assert 0 <= logs.default_num_workers() <= 8


def test_training_without_validation_warns(tmp_path: Path, cache: Path, caplog) -> None:
    cfg = compose_cfg(
        ["debug=smoke", "trainer.max_epochs=1", "+trainer.check_val_every_n_epoch=5"],
        tmp_path,
        cache,
    )
    with caplog.at_level(logging.INFO, logger="emg2qwerty_ssm.train"):
        train(cfg)
    assert "training ended without any validation" in caplog.text


def test_missing_split_lists_the_existing_ones(tmp_path: Path, cache: Path) -> None:
    cfg = compose_cfg(["debug=smoke", "user=synth_user5"], tmp_path, cache)
    with pytest.raises(FileNotFoundError, match="synth_generic, synth_user0, synth_user1"):
        train(cfg)


def test_finetuning_says_where_it_starts(tmp_path: Path, cache: Path, caplog) -> None:
    first = train(compose_cfg(["debug=smoke", "trainer.max_epochs=1"], tmp_path / "a", cache))
    cfg = compose_cfg(
        ["debug=smoke", "trainer.max_epochs=1", f"checkpoint={first['checkpoint']}"],
        tmp_path / "b",
        cache,
    )
    with caplog.at_level(logging.INFO, logger="emg2qwerty_ssm.train"):
        train(cfg)
    assert f"initialised from {first['checkpoint']}" in caplog.text


# ----------------------------------------------------------------------------- predictions


class _Part:
    def __init__(self, name: str, n: int) -> None:
        self.hdf5_path, self.n = Path(f"/x/{name}.hdf5"), n

    def __len__(self) -> int:
        return self.n


class _Concat:
    def __init__(self, *parts: _Part) -> None:
        self.datasets = parts


def test_session_records_group_windows_and_count_what_the_model_missed() -> None:
    pairs = [("helo", "hello"), ("wrld", "world"), ("abcx", "abc")]
    records = session_records("test/paper/greedy", _Concat(_Part("s1", 2), _Part("s2", 1)), pairs)
    by_session = {r["session"]: r for r in records}
    s1, s2 = by_session["s1"], by_session["s2"]
    assert s1["target_chars"] == 10 and s1["predicted_chars"] == 8
    assert s1["missing"] == pytest.approx(20.0) and s1["extra"] == 0.0  # 2 of 10 not emitted
    assert s2["extra"] == pytest.approx(100 / 3) and s2["missing"] == 0.0
    assert [w["prediction"] for w in s1["windows"]] == ["helo", "wrld"]
    assert s1["split"] == "test" and s1["protocol"] == "paper" and s1["decoder"] == "greedy"


def test_predictions_file_round_trip_and_worst_sessions(tmp_path: Path, capsys) -> None:
    from emg2qwerty_ssm.predictions import main, write_predictions

    pairs = [("", "abc"), ("abc", "abc")]
    records = session_records("test/session/greedy", _Concat(_Part("a", 1), _Part("b", 1)), pairs)
    write_predictions(tmp_path, records)
    assert read_predictions(tmp_path) == records
    main([str(tmp_path), "--worst", "1"])
    out = capsys.readouterr().out
    assert "-- a: CER 100.0 (missing 100.0" in out and "-- b:" not in out
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--key", "val/paper/beam"])


# ----------------------------------------------------------------------------- collector


def _write_run(path: Path, model: str, user: str, metrics: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(
        json.dumps({"model": model, "user": user, "metrics": metrics})
    )


def test_collect_tables_markdown_csv_and_cli(tmp_path: Path) -> None:
    for i, cer in enumerate((10.0, 20.0)):
        _write_run(
            tmp_path / f"run{i}",
            "tc_s4_small",
            f"user{i}",
            {"test/paper/greedy": {"CER": cer, "IER": 1.0}, "val/paper/greedy": {"CER": 5.0}},
        )
    _write_run(
        tmp_path / "run1" / "beam_lm", "tc_s4_small", "user1", {"test/paper/beam": {"CER": 7}}
    )
    _write_run(tmp_path / "other", "s4_large", "user10", {"test/paper/greedy": {"CER": 3.0}})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    runs, problems = collect.load_runs([tmp_path])
    assert len(runs) == 4 and len(problems) == 1 and "broken" in problems[0]
    tables = collect.build_tables(runs)
    assert [t.model for t in tables] == ["s4_large", "tc_s4_small"]
    small = tables[1]
    assert small.columns == ["test/paper/beam", "test/paper/greedy", "val/paper/greedy"]
    assert small.mean("test/paper/greedy") == (15.0, 2)
    assert small.rows()[-1] == ["mean", "7.00 (1 of 2)", "15.00", "5.00"]
    # emg2qwerty's IER is the rate of characters the model missed
    assert collect.build_tables(runs, rate="missing")[1].cells["user0"]["test/paper/greedy"] == 1.0
    md = collect.to_markdown(tables)
    assert "| user1 | 7.00 | 20.00 | 5.00 |" in md
    assert "tc_s4_small,mean,test/paper/greedy,CER,15.0" in collect.to_csv(tables)
    assert collect.add_published(small) and small.cells["user0"][collect.PUBLISHED_COLUMN] == 16.21
    out_md, out_csv = tmp_path / "t.md", tmp_path / "t.csv"
    assert collect.main([str(tmp_path), "--markdown", str(out_md), "--csv", str(out_csv)]) == 0
    assert "### tc_s4_small" in out_md.read_text() and out_csv.is_file()
    assert collect.main([str(tmp_path / "nothing")]) == 1


# ----------------------------------------------------------------------------- published data


def test_published_numbers_are_consistent() -> None:
    data = load_published()
    for name, model in data["models"].items():
        for condition in ("finetuned", "per_user_only"):
            values = per_user(name, condition)
            if values is None:
                continue
            assert list(values) == [f"user{i}" for i in range(8)]
            mean = sum(values.values()) / 8
            assert mean == pytest.approx(model["per_user_greedy"][f"{condition}_mean"], abs=0.0101)
    labels = {r.label for r in references()}
    assert {"TC_S4_small", "S4_large", "SplashNet"} <= labels
    assert yaml.safe_load((REPO_ROOT / "docs" / "published.yaml").read_text()) == data


# ----------------------------------------------------------------------------- the recipe


@pytest.mark.slow
def test_paper_recipe_end_to_end_at_smoke_scale(
    tmp_path: Path, cache: Path, baseline_checkpoint_dir: Path
) -> None:
    baseline = tmp_path / "emg2qwerty_models"
    (baseline / "personalized-finetuned").mkdir(parents=True)
    source = baseline_checkpoint_dir / "tds_conv_ctc_emg2qwerty.ckpt"
    for rel in ("generic", "personalized-finetuned/user0", "personalized-finetuned/user1"):
        (baseline / f"{rel}.ckpt").symlink_to(source)
    out = tmp_path / "paper"
    args = ["--synthetic", "tiny", "--users", "user0", "user1", "--models", "tc_s4_small"]
    args += ["--baseline-dir", str(baseline), "--out", str(out), "--in-process"]
    args += ["--set", "debug=smoke", f"paths.cache_dir={cache}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "reproduce_paper.py"), *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    placed = out / "checkpoints" / "TC_S4_small_generic" / "generic_checkpoint.ckpt"
    assert placed.is_file()
    for user in ("user0", "user1"):
        ft = json.loads((out / "tc_s4_small" / "ft" / user / "results.json").read_text())
        assert ft["config"]["checkpoint"] == str(placed)  # fine-tuned from the placed model
        lm = json.loads(
            (out / "tc_s4_small" / "ft" / user / "beam_lm" / "results.json").read_text()
        )
        assert set(lm["metrics"]) == {"test/paper/beam", "test/session/beam"}
        assert (out / "tds_conv_ctc" / "ft" / user / "beam_lm" / "results.json").is_file()
    md = (out / "paper_tables.md").read_text()
    assert "### tc_s4_small (CER, %)" in md and "### tds_conv_ctc (CER, %)" in md
    assert "| user0 |" in md and "| mean |" in md and "| zero-shot |" in md
    assert "16.21" in md and "46.16" in md  # published per-user and zero-shot beside ours
    assert (out / "paper_tables.csv").is_file() and (out / "fig2a.png").is_file()
    again = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "done already" in again.stdout
    assert "$ -m emg2qwerty_ssm.train" not in again.stdout  # nothing re-ran
