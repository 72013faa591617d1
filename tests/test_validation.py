"""Dataset validation: every kind of bad input gets a message naming the file and the fault."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from _emg_files import GOOD_DTYPE, T0, write_session
from omegaconf import OmegaConf

from emg2qwerty_ssm.validation import (
    DatasetError,
    check_split,
    main,
    validate_root,
    validate_session,
    validate_split,
)

REPO = Path(__file__).resolve().parent.parent


def _rows_with(n: int = 500, **edits) -> np.ndarray:
    rows = np.zeros(n, dtype=GOOD_DTYPE)
    rows["time"] = T0 + np.arange(n) / 2000.0
    for field, (index, value) in edits.items():
        rows[field][index] = value
    return rows


def _one_problem(path: Path, full: bool = False) -> str:
    problems = validate_session(path, full=full)
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(path))
    return problems[0]


def test_good_session_and_reference_pass(tmp_path, reference_dir):
    assert validate_session(write_session(tmp_path / "ok.hdf5"), full=True) == []
    ref = reference_dir / "sessions" / "reference_session.hdf5"
    assert validate_session(ref, full=True) == []


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(group="wrong"), "missing group '/emg2qwerty'"),
        (dict(dataset="series"), "missing dataset '/emg2qwerty/timeseries'"),
        (dict(dtype=[("emg_left", "<f4", (16,)), ("time", "<f8")]), "no field 'emg_right'"),
        (dict(dtype=[("emg_left", "<f4", (16,)), ("emg_right", "<f4", (16,))]), "no field 'time'"),
        (
            dict(dtype=[("emg_left", "<f4", (15,)), ("emg_right", "<f4", (16,)), ("time", "<f8")]),
            "'emg_left' has 15 channels",
        ),
        (
            dict(dtype=[("emg_left", "<f4", (16,)), ("emg_right", "<f8", (16,)), ("time", "<f8")]),
            "'emg_right' has dtype float64, expected float32",
        ),
        (
            dict(dtype=[("emg_left", "<f4", (16,)), ("emg_right", "<f4", (16,)), ("time", "<f4")]),
            "'time' has dtype float32, expected float64",
        ),
        (dict(drop_attrs=("keystrokes",)), "no attribute 'keystrokes'"),
        (dict(drop_attrs=("condition",)), "no attribute 'condition'"),
        (dict(attrs={"keystrokes": "[{'key': 'a'}"}), "'keystrokes' is not valid JSON"),
        (dict(attrs={"keystrokes": {"key": "a"}}), "'keystrokes' should be a JSON list"),
        (dict(attrs={"keystrokes": [{"key": "a", "end": T0}]}), "keystrokes[0] has no 'start'"),
        (
            dict(attrs={"keystrokes": [{"key": "a", "start": "soon", "end": T0}]}),
            "keystrokes[0].start should be a finite number",
        ),
        (
            dict(attrs={"keystrokes": [{"key": 5, "start": T0, "end": T0}]}),
            "keystrokes[0].key should be a string",
        ),
        (dict(attrs={"prompts": "not json"}), "'prompts' is not valid JSON"),
        (
            dict(attrs={"prompts": [{"name": "p", "start": T0, "end": T0, "payload": "x"}]}),
            "prompts[0].payload should be null",
        ),
        (dict(attrs={"duration_mins": "long"}), "'duration_mins' should be a number"),
    ],
)
def test_structural_problems(tmp_path, kwargs, expected):
    path = write_session(tmp_path / "bad.hdf5", 200, **kwargs)
    assert expected in _one_problem(path)


def test_missing_and_unreadable_files(tmp_path):
    assert "does not exist" in _one_problem(tmp_path / "nope.hdf5")
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not hdf5 at all")
    assert "not a readable HDF5 file" in _one_problem(junk)
    not_compound = tmp_path / "plain.hdf5"
    with h5py.File(not_compound, "w") as f:
        f.create_group("emg2qwerty").create_dataset("timeseries", data=np.zeros((10, 33)))
    assert "expected a compound dtype" in validate_session(not_compound)[0]


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (
            dict(emg_left=((7, 3), np.nan)),
            "'emg_left' has NaN/Inf values in 1 rows (first at row 7)",
        ),
        (
            dict(emg_right=((9, 0), np.inf)),
            "'emg_right' has NaN/Inf values in 1 rows (first at row 9)",
        ),
        (
            dict(time=(100, T0)),
            "'time' is not monotonic: it decreases at 1 rows (first at row 100)",
        ),
        (dict(time=(3, np.nan)), "'time' has 1 NaN/Inf values"),
    ],
)
def test_full_scan_finds_bad_values(tmp_path, edits, expected):
    path = write_session(tmp_path / "v.hdf5", rows=_rows_with(**edits))
    assert validate_session(path) == []  # the cheap check does not read rows
    assert expected in _one_problem(path, full=True)


def test_full_scan_crosses_chunk_boundaries(tmp_path, monkeypatch):
    import emg2qwerty_ssm.data.checks as session_checks

    monkeypatch.setattr(session_checks, "_SCAN_ROWS", 64)
    rows = _rows_with(500, time=(128, T0))  # the drop is the first row of a chunk
    path = write_session(tmp_path / "c.hdf5", rows=rows)
    assert "first at row 128" in _one_problem(path, full=True)


def test_root_reports_all_problems_at_once(tmp_path):
    write_session(tmp_path / "good.hdf5")
    write_session(tmp_path / "nogroup.hdf5", group="x")
    write_session(tmp_path / "channels.hdf5", dtype=[("emg_left", "<f4", (8,)), *GOOD_DTYPE[1:]])
    write_session(tmp_path / "nan.hdf5", rows=_rows_with(emg_left=((0, 0), np.nan)))
    problems = validate_root(tmp_path, full=True)
    assert len(problems) == 3
    assert {Path(p.split(":")[0]).name for p in problems} == {
        "nogroup.hdf5",
        "channels.hdf5",
        "nan.hdf5",
    }
    assert validate_root(tmp_path / "missing") == [
        f"{tmp_path / 'missing'}: dataset root does not exist or is not a directory"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no session files" in validate_root(empty)[0]


def test_metadata_listing_absent_sessions(tmp_path):
    write_session(tmp_path / "a.hdf5")
    (tmp_path / "metadata.csv").write_text(
        "user,session,condition,duration_mins,num_keystrokes,num_prompts,quality_check_tags\n"
        "1,a,on_keyboard,0.1,10,1,[]\n1,b,on_keyboard,0.1,10,1,[]\n"
    )
    problems = validate_root(tmp_path)
    assert len(problems) == 1 and "metadata.csv: 1 listed sessions have no file" in problems[0]
    assert problems[0].endswith(": b")
    (tmp_path / "metadata.csv").write_text("user,session\n1,a\n")
    assert "missing columns" in validate_root(tmp_path)[0]


def test_split_problems(tmp_path):
    write_session(tmp_path / "s1.hdf5")
    write_session(tmp_path / "s2.hdf5", drop_attrs=("prompts",))
    split = {
        "train": [{"user": 1, "session": "s1"}, {"user": 1, "session": "ghost"}],
        "val": [{"user": 1, "session": "s2"}, {"user": 1}],
        "test": [{"user": 1, "session": "s1"}],
    }
    problems = validate_split(tmp_path, split, split_source="my.yaml")
    assert len(problems) == 4, problems
    assert any("session s1 is listed in both 'train' and 'test'" in p for p in problems)
    assert any(
        "ghost.hdf5: session file does not exist (named in my.yaml 'train')" in p for p in problems
    )
    assert any("s2.hdf5: group '/emg2qwerty' has no attribute 'prompts'" in p for p in problems)
    assert any("my.yaml: val[1] should be {user: int, session: str}" in p for p in problems)
    # an OmegaConf split (what the trainer passes) works the same
    assert validate_split(tmp_path, OmegaConf.create(split), split_source="my.yaml") == problems
    assert validate_split(tmp_path, {"test": [{"user": 1, "session": "s1"}]}) == []
    assert "none of the keys" in validate_split(tmp_path, {"training": []})[0]
    assert "dataset root does not exist" in validate_split(tmp_path / "x", split)[0]

    with pytest.raises(DatasetError) as info:
        check_split(tmp_path, split)
    assert isinstance(info.value, ValueError) and len(info.value.problems) == 4
    assert "4 dataset problems" in str(info.value) and "ghost.hdf5" in str(info.value)


def test_command_line(tmp_path, capsys):
    write_session(tmp_path / "s1.hdf5")
    splits = tmp_path / "splits"
    splits.mkdir()
    split = {"user": "u", "dataset": {"train": [{"user": 1, "session": "s1"}], "val": []}}
    (splits / "u.yaml").write_text("# @package _global_\n" + yaml.safe_dump(split))
    # a synthetic-style conf/user file that points at the root's split file
    pointer = tmp_path / "synth_u.yaml"
    pointer.write_text(
        "# @package _global_\nuser: synth_u\ndataset:\n"
        "  split_file: ${dataset.root}/splits/u.yaml\n"
    )
    assert main(["--root", str(tmp_path), "--full"]) == 0
    assert main(["--root", str(tmp_path), "--split-file", str(splits / "u.yaml")]) == 0
    assert main(["--root", str(tmp_path), "--split", str(pointer)]) == 0
    assert "OK" in capsys.readouterr().out

    assert main(["--root", str(tmp_path), "--split", str(REPO / "conf/user/user3.yaml")]) == 1
    err = capsys.readouterr().err
    assert "12 dataset problems" in err and "session file does not exist" in err
    assert main(["--root", str(tmp_path), "--split", str(tmp_path / "none.yaml")]) == 1
    assert "none.yaml: split file does not exist" in capsys.readouterr().err
    write_session(tmp_path / "s2.hdf5", rows=_rows_with(time=(5, T0 - 1)))
    assert main(["--root", str(tmp_path)]) == 0  # cheap check
    assert main(["--root", str(tmp_path), "--full"]) == 1
    assert "s2.hdf5: field 'time' is not monotonic" in capsys.readouterr().err


def test_command_line_follows_the_synthetic_user_configs(tmp_path, capsys):
    """conf/user/synth.yaml and its aliases point at <root>/splits/<synth_split>.yaml."""
    write_session(tmp_path / "s1.hdf5")
    (tmp_path / "splits").mkdir()
    for name in ("user0", "user3"):
        split = {"train": [{"user": 1, "session": "s1"}], "val": [], "test": []}
        (tmp_path / "splits" / f"{name}.yaml").write_text(yaml.safe_dump(split))
    for config in ("synth.yaml", "synth_user0.yaml", "synth_user3.yaml"):
        assert main(["--root", str(tmp_path), "--split", str(REPO / "conf/user" / config)]) == 0
    assert main(["--root", str(tmp_path), "--split", str(REPO / "conf/user/synth_user5.yaml")])
    assert "splits/user5.yaml: split file does not exist" in capsys.readouterr().err
