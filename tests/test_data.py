"""The data layer against the reference fixture (docs/format.md#session-files) and on small
generated files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _emg_files import T0, write_session

from emg2qwerty_ssm import data
from emg2qwerty_ssm.data import (
    EMGSessionData,
    LabelData,
    SessionFormatError,
    SessionTooShortError,
    WindowedEMGDataset,
)
from emg2qwerty_ssm.data import session as data_session

REPO = Path(__file__).resolve().parent.parent

# The four windowing configurations of reference_session.expected.json.
WINDOW_CONFIGS = {
    "train_val_8000_pad1800_200": dict(window_length=8000, padding=(1800, 200)),
    "w4000_s1000_nopad": dict(window_length=4000, stride=1000),
    "full_session": dict(window_length=None),
}


@pytest.fixture(scope="module")
def ref(reference_dir: Path) -> tuple[Path, dict]:
    sessions = reference_dir / "sessions"
    expected = json.loads((sessions / "reference_session.expected.json").read_text())
    return sessions / "reference_session.hdf5", expected


# ------------------------------------------------------------------ reference fixture
def test_reference_session_fields_and_metadata(ref):
    path, exp = ref
    with EMGSessionData(path) as s:
        assert len(s) == exp["len"]
        assert s.fields == exp["fields"]
        assert str(s.timeseries.dtype.descr) == exp["dtype"]
        assert sorted(s.metadata) == exp["metadata_keys"]
        assert s.session_name == exp["session_name"]
        assert s.user == exp["user"]
        assert s.condition == exp["condition"]
        assert s.duration_mins == exp["duration_mins"]
        assert len(s.keystrokes) == exp["num_keystrokes_raw"]
        assert len(s.prompts) == exp["num_prompts_raw"]
        assert [s.timestamps[0], s.timestamps[-1]] == exp["time_first_last"]


def test_reference_ground_truth_and_prompts(ref):
    path, exp = ref
    with EMGSessionData(path) as s:
        gt = s.ground_truth()
        assert gt.text == exp["ground_truth_text"]
        assert gt.labels.dtype == np.int32
        assert gt.labels.tolist() == exp["ground_truth_labels"]
        assert gt.timestamps.tolist() == exp["ground_truth_timestamps"]
        prompts = LabelData.from_prompts(s.prompts)
        assert prompts.text == exp["prompts_text"]
        assert prompts.labels.tolist() == exp["prompts_labels"]
        assert prompts.timestamps is None


@pytest.mark.parametrize("name", list(WINDOW_CONFIGS))
def test_reference_windows(ref, name):
    path, exp = ref
    expected = exp["windows"][name]
    ds = WindowedEMGDataset(path, **WINDOW_CONFIGS[name])
    assert len(ds) == expected["len"]
    for i, item in enumerate(expected["items"]):
        emg, labels = ds[i]
        assert emg.dtype == torch.float32
        assert list(emg.shape) == item["emg_shape"], i
        # The fixture hashes the float32 bytes of the (T, 2, 16) window in C order.
        digest = hashlib.sha256(emg.numpy().astype(np.float32).tobytes()).hexdigest()
        assert digest == item["emg_sha256_f32"], i
        assert labels.dtype == torch.int32
        assert labels.tolist() == item["labels"], i


def test_reference_long_window_is_a_clear_error(ref, caplog):
    path, exp = ref
    assert "error" in exp["windows"]["long_160000_pad1800_200"]  # the reference fails too
    with pytest.raises(SessionTooShortError) as info:
        WindowedEMGDataset(path, window_length=160000, padding=(1800, 200))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message and "60000" in message and "160000" in message
    assert "shorter than the window" in message

    with caplog.at_level(logging.WARNING, logger="emg2qwerty_ssm.data"):
        ds = WindowedEMGDataset(
            path, window_length=160000, padding=(1800, 200), skip_if_too_short=True
        )
    assert len(ds) == 0 and list(ds) == []
    assert any("shorter than the window" in r.getMessage() for r in caplog.records)


def test_fast_ground_truth_equals_keystroke_walk(ref, tmp_path):
    """ground_truth's vectorised search must match the emg2qwerty walk, also for unsorted
    keystrokes (the walk stops at the first key past end_t) and dropped keys."""
    path, _ = ref
    keys = [
        {"key": "a", "start": T0 + 0.1, "end": T0 + 0.2},
        {"key": "Key.shift_r", "start": T0 + 0.2, "end": T0 + 0.3},
        {"key": "b", "start": T0 + 0.5, "end": T0 + 0.6},
        {"key": "c", "start": T0 + 0.3, "end": T0 + 0.4},  # out of order
        {"key": "’", "start": T0 + 0.7, "end": T0 + 0.8},
        {"key": " ", "start": T0 + 0.8, "end": T0 + 0.9},
    ]
    unsorted = write_session(tmp_path / "u.hdf5", 2000, attrs={"keystrokes": keys})
    rng = np.random.default_rng(0)
    for p in (path, unsorted):
        with EMGSessionData(p) as s:
            t = s.timestamps
            for _ in range(40):
                a, b = np.sort(rng.uniform(t[0] - 1, t[-1] + 1, 2))
                fast = s.ground_truth(a, b)
                walk = LabelData.from_keystrokes(s.keystrokes, a, b)
                assert fast == walk
                assert fast.timestamps.tolist() == walk.timestamps.tolist()
    with EMGSessionData(unsorted) as s:
        # stops at "b" (0.5 > 0.45) so "c" at 0.3 is never reached
        assert s.ground_truth(T0, T0 + 0.45).text == "a"
        assert s.ground_truth().text == "abc' "


# ----------------------------------------------------------------------- reader API
def test_rows_slice_and_time_slice(tmp_path):
    path = write_session(tmp_path / "s.hdf5", 3000)
    with EMGSessionData(path) as s:
        rows = s[10:20]
        assert rows.dtype.names == ("emg_left", "emg_right", "time")
        assert rows["emg_left"][:, 0].tolist() == list(range(10, 20))
        t = s.timestamps
        window = s.slice(t[100], t[250])  # [i(start), i(end)) with left-sided search
        assert window["emg_left"][:, 0].tolist() == list(range(100, 250))
        assert len(s.slice(t[100] - 1e-4, t[100] + 1e-4)) == 1  # samples are 5e-4 s apart
        assert len(s.slice()) == 3000
        assert s["time"].shape == (3000,)


def test_ground_truth_uses_prompts_off_keyboard(tmp_path):
    prompts = [
        {"name": "text_prompt", "start": T0, "end": T0 + 0.3, "payload": {"text": "hi\n"}},
        {"name": "pause", "start": T0 + 0.3, "end": T0 + 0.4, "payload": None},
        {"name": "text_prompt", "start": T0 + 0.5, "end": T0 + 0.9, "payload": {"text": "yo"}},
    ]
    path = write_session(
        tmp_path / "p.hdf5", 2000, attrs={"condition": "off_keyboard", "prompts": prompts}
    )
    with EMGSessionData(path) as s:
        assert s.ground_truth().text == "hi⏎yo⏎"
        assert s.ground_truth(T0 + 0.1, T0 + 1.0).text == "yo⏎"
        assert s.ground_truth(T0, T0 + 0.4).text == "hi⏎"
    with pytest.raises(SessionFormatError, match="on_keyboard"):
        WindowedEMGDataset(path, 1000)


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        EMGSessionData(tmp_path / "missing.hdf5")
    bad_group = write_session(tmp_path / "g.hdf5", 100, group="other")
    with pytest.raises(SessionFormatError, match=r"g\.hdf5.*missing group"):
        EMGSessionData(bad_group)
    bad_json = write_session(tmp_path / "j.hdf5", 100, attrs={"keystrokes": "[{"})
    with pytest.raises(SessionFormatError, match=r"j\.hdf5.*keystrokes.*not valid JSON"):
        EMGSessionData(bad_json)
    no_field = write_session(tmp_path / "f.hdf5", 100, dtype=[("emg_left", "<f4", (16,))])
    with pytest.raises(SessionFormatError, match=r"f\.hdf5.*no field 'emg_right'"):
        EMGSessionData(no_field)
    no_attr = write_session(tmp_path / "a.hdf5", 100, drop_attrs=("condition",))
    with EMGSessionData(no_attr) as s, pytest.raises(SessionFormatError, match="'condition'"):
        _ = s.condition


# ------------------------------------------------------------------------ LabelData
def test_label_data_constructors_and_ops():
    a = LabelData.from_str("Hi\n", timestamps=[1.0, 2.0, 3.0])
    assert a.text == "Hi⏎" and a.labels.tolist() == [33, 8, 95]
    assert a.labels.dtype == np.int32
    b = LabelData.from_labels([0, 96, 94], timestamps=[4.0, 5.0, 6.0])
    assert b.text == "a ⌫"
    c = a + b
    assert c.text == "Hi⏎a ⌫" and c.timestamps.tolist() == [1, 2, 3, 4, 5, 6]
    assert (a + LabelData.from_str("x")).timestamps is None  # only kept when both have them
    assert LabelData.from_labels(c.labels) == c  # equality compares text only
    assert LabelData.from_str("ab") != LabelData.from_str("ba")
    assert str(LabelData.from_str("a\nb")) == "a\nb"
    with pytest.raises(ValueError, match="timestamps"):
        LabelData("abc", [1.0, 2.0])
    assert LabelData(text="ab", _timestamps=[1.0, 2.0]).timestamps.tolist() == [1.0, 2.0]


def test_label_data_keys_and_prompts():
    assert LabelData.from_key("Key.space").text == " "
    assert LabelData.from_key("Key.shift_r").text == ""
    key = LabelData.from_key({"key": "Key.backspace", "start": 3.0, "end": 3.1})
    assert key.text == "⌫" and key.timestamps.tolist() == [3.0]
    assert LabelData.from_prompt("done").text == "done⏎"
    assert LabelData.from_prompt("done", enforce_newline=False).text == "done"
    assert LabelData.from_prompt({"name": "x", "start": 0, "end": 1, "payload": None}).text == ""
    keys = [
        {"key": "a", "start": 1.0, "end": 1.1},
        {"key": "Key.ctrl", "start": 2.0, "end": 2.1},
        {"key": "b", "start": 3.0, "end": 3.1},
        {"key": "c", "start": 4.0, "end": 4.1},
    ]
    picked = LabelData.from_keystrokes(keys, start_t=1.5, end_t=3.0)  # both ends inclusive
    assert picked.text == "b" and picked.timestamps.tolist() == [3.0]


# ---------------------------------------------------------------------- windows
def test_windows_padding_jitter_and_labels(tmp_path):
    path = write_session(tmp_path / "w.hdf5", 2000)
    ds = WindowedEMGDataset(path, window_length=500, stride=300, padding=(100, 50))
    assert len(ds) == (2000 - 500) // 300 + 1
    first = ds[0][0][:, 0, 0].numpy()
    assert first[0] == 0 and len(first) == 550  # left padding cut at the start
    emg, labels = ds[2]
    rows = emg[:, 0, 0].numpy()
    assert rows[0] == 600 - 100 and len(rows) == 100 + 500 + 50
    last = ds[len(ds) - 1][0][:, 0, 0].numpy()
    assert last[-1] == 1999  # right padding cut at the end
    # labels come from the unpadded window [600, 1100) only
    with EMGSessionData(path) as s:
        t = s.timestamps
        expected = s.ground_truth(t[600], t[1099]).labels
    assert labels.tolist() == expected.tolist() and len(expected) > 0

    jittered = WindowedEMGDataset(path, window_length=500, stride=300, jitter=True)
    np.random.seed(0)
    starts = {int(jittered[1][0][0, 0, 0]) for _ in range(60)}
    assert min(starts) >= 300 and max(starts) < 600 and len(starts) > 20


def test_collate_pads_time_first(tmp_path):
    path = write_session(tmp_path / "c.hdf5", 2000)
    ds = WindowedEMGDataset(path, window_length=400, stride=400, padding=(100, 0))
    batch = WindowedEMGDataset.collate([ds[0], ds[2]])
    assert batch["inputs"].shape == (500, 2, 2, 16)
    assert batch["input_lengths"].tolist() == [400, 500]
    assert batch["input_lengths"].dtype == torch.int32
    assert batch["target_lengths"].dtype == torch.int32
    assert torch.all(batch["inputs"][400:, 0] == 0)
    n0, n1 = batch["target_lengths"].tolist()
    assert batch["targets"].shape == (max(n0, n1), 2)
    assert batch["targets"][:n0, 0].tolist() == ds[0][1].tolist()


def test_dataloader_workers_open_their_own_handles(tmp_path):
    path = write_session(tmp_path / "d.hdf5", 4000)
    ds = WindowedEMGDataset(path, window_length=500, padding=(50, 50))
    ds[0]  # the parent process now holds an open handle that forked workers must not use
    kwargs = dict(batch_size=3, collate_fn=WindowedEMGDataset.collate)
    serial = list(torch.utils.data.DataLoader(ds, num_workers=0, **kwargs))
    parallel = list(
        torch.utils.data.DataLoader(ds, num_workers=2, multiprocessing_context="fork", **kwargs)
    )
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["targets"], b["targets"])


def test_open_session_cache_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(data_session, "_MAX_OPEN_SESSIONS", 2)
    paths = [write_session(tmp_path / f"s{i}.hdf5", 600) for i in range(3)]
    datasets = [WindowedEMGDataset(p, 500) for p in paths]
    for ds in datasets:
        ds[0]
    assert len(data_session._open_sessions) == 2 and paths[0] not in data_session._open_sessions
    assert datasets[0][0][0].shape == (500, 2, 16)  # reopened on demand


def test_invalid_window_arguments(tmp_path):
    path = write_session(tmp_path / "x.hdf5", 1000)
    with pytest.raises(ValueError, match="padding"):
        WindowedEMGDataset(path, 100, padding=(-1, 0))
    with pytest.raises(ValueError, match="positive"):
        WindowedEMGDataset(path, 100, stride=0)
    with pytest.raises(IndexError):
        WindowedEMGDataset(path, 100)[10]


# --------------------------------------------------------------- metadata, stats, splits
def _stats_script():
    spec = importlib.util.spec_from_file_location(
        "print_dataset_stats", REPO / "scripts" / "print_dataset_stats.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metadata_csv_and_stats(tmp_path, capsys):
    write_session(tmp_path / "s1.hdf5", 1200, attrs={"user": "1"})
    write_session(tmp_path / "s2.hdf5", 2400, attrs={"user": "1"})
    write_session(tmp_path / "s3.hdf5", 1200, attrs={"user": "2"})
    scanned = data.scan_sessions(tmp_path)
    assert list(scanned.columns) == list(data.METADATA_COLUMNS)
    assert scanned["session"].tolist() == ["s1", "s2", "s3"]
    per_user, totals = data.dataset_stats(tmp_path)  # no metadata.csv: scans the files
    with EMGSessionData(tmp_path / "s2.hdf5") as s:
        n_keys = len(s.keystrokes)
    assert totals["users"] == 2 and totals["sessions"] == 3
    assert totals["hours"] == pytest.approx(4800 / 2000 / 3600)
    assert per_user.loc["1", "keystrokes"] > n_keys and totals["prompts"] == 3

    scanned.to_csv(tmp_path / "metadata.csv", index=False)
    read = data.read_metadata(tmp_path)
    assert read["session"].tolist() == ["s1", "s2", "s3"]
    assert read["num_keystrokes"].sum() == totals["keystrokes"]

    assert _stats_script().main(["--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "from metadata.csv" in out and "sessions:   3" in out and "users:      2" in out

    (tmp_path / "metadata.csv").write_text("user,session\n1,s1\n")
    with pytest.raises(ValueError, match="missing columns"):
        data.read_metadata(tmp_path)
    assert _stats_script().main(["--root", str(tmp_path / "nope")]) == 1


def test_load_split_formats(tmp_path):
    conf = data.load_split(REPO / "conf" / "user" / "user0.yaml")
    assert set(conf) == {"train", "val", "test"} and conf["test"][0]["user"] == 43037958
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"train": [{"user": 1, "session": "a"}], "val": []}))
    assert data.load_split(bare) == {"train": [{"user": 1, "session": "a"}], "val": []}
    assert data.session_path("/r", "a") == Path("/r/a.hdf5")


def test_user_splits_match_reference(reference_dir):
    """conf/user/*.yaml are the paper's splits, with sizes and structure of
    docs/format.md#splits."""
    sizes = {"user0": 10, "user1": 9, "user2": 9, "user3": 8, "user4": 8, "user5": 8}
    sizes |= {"user6": 8, "user7": 8}
    generic = data.load_split(REPO / "conf" / "user" / "generic.yaml")
    assert [len(generic[k]) for k in ("train", "val", "test")] == [830, 192, 16]
    generic_tv_users = {e["user"] for k in ("train", "val") for e in generic[k]}
    generic_test = {e["session"] for e in generic["test"]}
    for name, n_train in sizes.items():
        ours = REPO / "conf" / "user" / f"{name}.yaml"
        assert yaml.safe_load(ours.read_text()) == yaml.safe_load(
            (reference_dir / "splits" / f"{name}.yaml").read_text()
        )
        assert ours.read_text().startswith("# @package _global_")
        split = data.load_split(ours)
        assert [len(split[k]) for k in ("train", "val", "test")] == [n_train, 2, 2]
        assert {e["session"] for e in split["test"]} <= generic_test
        assert not {e["user"] for e in split["test"]} & generic_tv_users
