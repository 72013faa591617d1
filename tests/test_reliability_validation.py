"""Silent today, now errors before training: NaN/Inf EMG, non-monotonic time, keystrokes
outside the recording (full scan by default, once per file), unknown split keys, a session in
two splits, a split typo; and a rerun into a run dir of another config."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml
from _emg_files import GOOD_DTYPE, T0, write_session
from test_reliability_resume import KillAt, SimulatedKill
from trainer_helpers import cache_dir, compose_cfg

from emg2qwerty_ssm import validation
from emg2qwerty_ssm.data import checks as session_checks
from emg2qwerty_ssm.run_dir import RunDirConflict
from emg2qwerty_ssm.train import train
from emg2qwerty_ssm.validation import DatasetError, ValidationStamps, validate_session

N = 4000


def _rows(**edits) -> np.ndarray:
    rows = np.zeros(N, dtype=GOOD_DTYPE)
    rows["emg_left"][:, 0] = np.sin(np.arange(N))
    rows["time"] = T0 + np.arange(N) / 2000.0
    for field, (index, value) in edits.items():
        rows[field][index] = value
    return rows


def _dataset(root, split: dict, **sessions) -> None:
    """Sessions s1..s3 (override one with rows=/attrs= via ``sessions``) and splits/user0.yaml."""
    (root / "splits").mkdir(parents=True)
    for name in ("s1", "s2", "s3"):
        write_session(root / f"{name}.hdf5", **{"rows": _rows(), **sessions.get(name, {})})
    (root / "splits" / "user0.yaml").write_text(yaml.safe_dump(split))


GOOD_SPLIT = {
    "train": [{"user": 1, "session": "s1"}],
    "val": [{"user": 1, "session": "s2"}],
    "test": [{"user": 1, "session": "s3"}],
}


def _train(root, run_dir, cache, *extra):
    overrides = ["debug=smoke", "dataset=real", f"dataset.root={root}", "user=synth_user0", *extra]
    return train(compose_cfg(overrides, run_dir, cache))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return cache_dir(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("session", "edits", "expected"),
    [
        (
            "s1",
            {"emg_left": (1234, np.nan)},
            "'emg_left' has NaN/Inf values in 1 rows (first at row 1234)",
        ),
        (
            "s2",
            {"emg_right": (77, np.inf)},
            "'emg_right' has NaN/Inf values in 1 rows (first at row 77)",
        ),
        (
            "s3",
            {"time": (2500, T0)},
            "'time' is not monotonic: it decreases at 1 rows (first at row 2500)",
        ),
    ],
)
def test_bad_rows_in_any_split_stop_the_run_before_training(
    tmp_path, cache, session, edits, expected
):
    root = tmp_path / "data"
    _dataset(root, GOOD_SPLIT, **{session: {"rows": _rows(**edits)}})
    with pytest.raises(DatasetError) as err:
        _train(root, tmp_path / "run", cache)
    assert f"{root / session}.hdf5: field {expected}" in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_keystrokes_outside_the_recording_are_named(tmp_path):
    keys = [
        {"key": "a", "start": T0 + 0.5, "end": T0 + 0.6},
        {"key": "b", "start": T0 + 900, "end": T0 + 901},
    ]
    path = write_session(tmp_path / "k.hdf5", rows=_rows(), attrs={"keystrokes": keys})
    assert validate_session(path) == []  # headers alone cannot see it
    (problem,) = validate_session(path, full=True)
    assert problem.startswith(f"{path}: 1 of 2 keystrokes lie outside")
    assert "keystrokes[1] = 'b'" in problem


def test_each_file_is_scanned_once_until_it_changes(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _dataset(root, GOOD_SPLIT)
    scans = []
    real = session_checks._scan_rows
    monkeypatch.setattr(
        session_checks, "_scan_rows", lambda p, *a: (scans.append(p.name), real(p, *a))[1]
    )
    stamps = tmp_path / "stamps.json"
    for _ in range(2):
        assert (
            validation.validate_split(root, GOOD_SPLIT, full=True, stamps=ValidationStamps(stamps))
            == []
        )
    assert sorted(scans) == ["s1.hdf5", "s2.hdf5", "s3.hdf5"]
    # a changed file (new mtime/size) is read again, and its new fault is found
    write_session(root / "s2.hdf5", rows=_rows(emg_left=(5, np.nan)))
    os.utime(root / "s2.hdf5", ns=(1, 1))
    problems = validation.validate_split(
        root, GOOD_SPLIT, full=True, stamps=ValidationStamps(stamps)
    )
    assert scans[3:] == ["s2.hdf5"] and "first at row 5" in problems[0]


def test_misspelt_split_keys_are_named_not_an_empty_train_split(tmp_path, cache):
    root = tmp_path / "data"
    typo = {"tain": GOOD_SPLIT["train"], "vall": GOOD_SPLIT["val"], "test": GOOD_SPLIT["test"]}
    _dataset(root, typo)
    with pytest.raises(DatasetError) as err:
        _train(root, tmp_path / "run", cache)
    text = str(err.value)
    assert "unknown key 'tain' (did you mean 'train'?)" in text and "'vall'" in text
    assert "shorter than" not in text
    # the same typo inline in a user config
    with pytest.raises(DatasetError, match="unknown key 'tain'"):
        _train(root, tmp_path / "run2", cache, "+dataset.tain=[]")


def test_a_session_in_two_splits_is_a_leak(tmp_path, cache):
    root = tmp_path / "data"
    leak = {**GOOD_SPLIT, "test": [{"user": 1, "session": "s1"}]}
    _dataset(root, leak)
    with pytest.raises(DatasetError, match="session s1 is listed in both 'train' and 'test'"):
        _train(root, tmp_path / "run", cache)


def test_an_empty_train_split_names_the_split(tmp_path, cache):
    root = tmp_path / "data"
    _dataset(root, {"val": GOOD_SPLIT["val"], "test": GOOD_SPLIT["test"]})
    with pytest.raises(DatasetError, match=r"user0.yaml: the split lists no 'train' sessions"):
        _train(root, tmp_path / "run", cache)


@pytest.mark.slow
def test_rerun_with_another_config_refuses_unless_told(tmp_path, cache):
    base = [
        "debug=smoke",
        "trainer.max_epochs=2",
        "evaluation.splits=[test]",
        "evaluation.protocols=[paper]",
    ]
    with pytest.raises(SimulatedKill):
        train(compose_cfg(base, tmp_path, cache), callbacks=[KillAt(1, 0)])
    changed = [*base, "optimizer.lr=0.001"]
    with pytest.raises(RunDirConflict, match=r"optimizer.lr: 0.0025 -> 0.001.*allow_config_change"):
        train(compose_cfg(changed, tmp_path, cache))
    results = train(compose_cfg([*changed, "allow_config_change=true"], tmp_path, cache))
    assert results["config"]["optimizer"]["lr"] == 0.001
    (change,) = results["config_history"]
    assert change["changes"] == ["optimizer.lr: 0.0025 -> 0.001"]
    # the same config again is no change
    again = train(compose_cfg([*changed, "resume=false"], tmp_path, cache))
    assert again["config_history"] == results["config_history"]
