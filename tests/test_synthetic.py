"""The synthetic generator: exact file format, splits, determinism, caching, and the
physiological/typing checks of docs/synthetic-evidence.md "Checks worth automating"."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from scipy import signal

from emg2qwerty_ssm import synthetic
from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.synthetic import dataset as ds
from emg2qwerty_ssm.synthetic.__main__ import main as cli_main
from emg2qwerty_ssm.synthetic.params import DatasetConfig, GeneratorParams, preset_config
from emg2qwerty_ssm.synthetic.text import PANGRAM, load_corpus
from emg2qwerty_ssm.synthetic.typing import sample_typist, simulate_typing

REPO = Path(__file__).resolve().parent.parent
FS = 2000


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """The tiny preset, written through the command line."""
    root = tmp_path_factory.mktemp("synth") / "tiny"
    assert cli_main(["--preset", "tiny", "--out", str(root), "--seed", "3"]) == 0
    return root


@pytest.fixture(scope="module")
def long_sessions():
    """Two 60 s sessions of each of two users (enough keystrokes per key for averages).

    Returns {user_index: [(emg (T, 32), keystrokes, info), ...]}.
    """
    config = DatasetConfig(
        n_users=3, n_heldout=1, sessions_per_user=2, heldout_sessions=4, session_seconds=60.0
    )
    specs = [
        s for s in ds.plan_sessions(config, seed=11) if s.session_index < 2 and s.user_index < 2
    ]
    out: dict[int, list] = {}
    for spec in specs:
        data, attrs, _ = ds.generate_session(config, 11, spec)
        emg = np.concatenate([data["emg_left"], data["emg_right"]], axis=1)
        keys = json.loads(attrs["keystrokes"])
        info = json.loads(attrs["synthetic_info"])
        for k in keys:  # keystroke times relative to the first sample
            k["t"] = k["start"] - data["time"][0]
        out.setdefault(spec.user_index, []).append((emg, keys, info))
    return out


def _sessions(root: Path) -> list[Path]:
    return sorted(root.glob("*.hdf5"))


# ----------------------------------------------------------------------------- format
def test_session_files_match_spec_exactly(tiny_root):
    files = _sessions(tiny_root)
    assert len(files) == 16  # tiny: 4 users x 4 sessions
    cs = charset()
    for path in files:
        with h5py.File(path, "r") as f:
            assert list(f.keys()) == ["emg2qwerty"]
            group = f["emg2qwerty"]
            ts = group["timeseries"]
            assert ts.ndim == 1
            assert ts.dtype.names == ("emg_left", "emg_right", "time")
            assert ts.dtype["emg_left"] == np.dtype(("<f4", (16,)))
            assert ts.dtype["emg_right"] == np.dtype(("<f4", (16,)))
            assert ts.dtype["time"] == np.dtype("<f8")
            rows = ts[:]
            attrs = dict(group.attrs)
        time = rows["time"]
        assert np.all(np.diff(time) > 0)
        np.testing.assert_allclose(np.diff(time), 1 / FS, rtol=0, atol=1e-6)
        assert 1.5e9 < time[0] < 1.7e9  # unix seconds
        assert np.isfinite(rows["emg_left"]).all() and np.isfinite(rows["emg_right"]).all()
        assert {
            "session_name",
            "user",
            "condition",
            "duration_mins",
            "keystrokes",
            "prompts",
        } <= set(attrs)
        assert attrs["session_name"] == path.stem
        assert attrs["condition"] == "on_keyboard"
        assert isinstance(attrs["user"], str) and attrs["user"].isdigit()
        assert attrs["duration_mins"] == pytest.approx(len(rows) / FS / 60)

        keystrokes = json.loads(attrs["keystrokes"])
        assert keystrokes and all(set(k) == {"key", "start", "end"} for k in keystrokes)
        starts = np.array([k["start"] for k in keystrokes])
        ends = np.array([k["end"] for k in keystrokes])
        assert np.all(np.diff(starts) >= 0) and np.all(ends > starts)
        assert time[0] <= starts[0] and ends[-1] <= time[-1]
        for k in keystrokes:
            assert k["key"] in cs.allowed_keys, k  # real key names: "a", "Key.space", ...

        prompts = json.loads(attrs["prompts"])
        assert prompts
        for p in prompts:
            assert set(p) == {"name", "start", "end", "payload"}
            assert p["name"] == "text_prompt" and p["start"] < p["end"]
            assert set(p["payload"]) == {"text"}
            text = p["payload"]["text"]
            assert text == text.lower() and len(text.split()) >= 4 and cs.clean_str(text) == text


def test_metadata_csv_lists_every_session(tiny_root):
    with open(tiny_root / "metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == [
        "user",
        "session",
        "condition",
        "duration_mins",
        "num_keystrokes",
        "num_prompts",
        "quality_check_tags",
    ]
    assert sorted(r["session"] for r in rows) == [p.stem for p in _sessions(tiny_root)]
    for row in rows:
        with h5py.File(tiny_root / f"{row['session']}.hdf5", "r") as f:
            attrs = f["emg2qwerty"].attrs
            assert row["user"] == attrs["user"]
            assert int(row["num_keystrokes"]) == len(json.loads(attrs["keystrokes"]))
            assert int(row["num_prompts"]) == len(json.loads(attrs["prompts"]))
            assert float(row["duration_mins"]) == pytest.approx(attrs["duration_mins"])
        assert yaml.safe_load(row["quality_check_tags"]) == []


def test_splits_follow_the_real_format_and_hold_users_out(tiny_root, reference_dir):
    real = (reference_dir / "splits" / "user0.yaml").read_text()
    assert real.startswith("# @package _global_\n")
    splits = {}
    for name in ("generic", "user0", "user1"):
        text = (tiny_root / "splits" / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_\n")
        data = yaml.safe_load(text)
        assert set(data) == {"user", "dataset"} and data["user"] == name
        assert set(data["dataset"]) == {"train", "val", "test"}
        for part in data["dataset"].values():
            for item in part:
                assert set(item) == {"user", "session"} and isinstance(item["user"], int)
                assert (tiny_root / f"{item['session']}.hdf5").is_file()
        splits[name] = {
            k: {(i["user"], i["session"]) for i in v} for k, v in data["dataset"].items()
        }
    held_out = set()
    for name in ("user0", "user1"):
        s = splits[name]
        users = {u for part in s.values() for u, _ in part}
        assert len(users) == 1
        held_out |= users
        assert s["train"] and s["val"] and s["test"]
        assert (
            not (s["train"] & s["val"])
            and not (s["train"] & s["test"])
            and not (s["val"] & s["test"])
        )
        assert s["test"] <= splits["generic"]["test"]
    generic = splits["generic"]
    assert {u for u, _ in generic["train"] | generic["val"]}.isdisjoint(held_out)
    assert generic["test"] == splits["user0"]["test"] | splits["user1"]["test"]
    manifest = json.loads((tiny_root / ds.MANIFEST).read_text())
    assert sorted(manifest["splits"]) == ["generic", "user0", "user1"]


def test_user_configs_point_at_generated_split_files():
    full_splits = ds.make_splits(
        preset_config("full"), ds.plan_sessions(preset_config("full"), 0), 0
    )
    tiny_splits = ds.make_splits(
        preset_config("tiny"), ds.plan_sessions(preset_config("tiny"), 0), 0
    )
    files = sorted((REPO / "conf" / "user").glob("synth_*.yaml"))
    names = [p.stem.removeprefix("synth_") for p in files]
    assert {"generic", "user0", "user1"} <= set(names) and set(names) <= set(full_splits)
    assert {"generic", "user0", "user1"} <= set(tiny_splits)
    # each synth_<name>.yaml is an alias of conf/user/synth.yaml with synth_split=<name>
    synth = yaml.safe_load((REPO / "conf" / "user" / "synth.yaml").read_text())
    assert synth["user"] == "synth_${synth_split}"
    assert synth["dataset"] == {"split_file": "${dataset.split_dir}/${synth_split}.yaml"}
    for path, name in zip(files, names, strict=True):
        text = path.read_text()
        assert text.startswith("# @package _global_\n")
        assert yaml.safe_load(text) == {"defaults": ["synth"], "synth_split": name}
    for dataset in ("synthetic_tiny", "synthetic_demo", "synthetic_full"):
        node = yaml.safe_load((REPO / "conf" / "dataset" / f"{dataset}.yaml").read_text())
        assert node["split_dir"] == "${dataset.root}/splits"  # where the generator writes them


# ----------------------------------------------------------------------------- reader / validator
def test_generated_files_load_and_validate(tiny_root):
    from emg2qwerty_ssm.data import EMGSessionData, LabelData, WindowedEMGDataset, load_split
    from emg2qwerty_ssm.validation import validate_root, validate_split

    assert validate_root(tiny_root, full=True) == []
    for name in ("generic", "user0", "user1"):
        assert (
            validate_split(tiny_root, load_split(tiny_root / "splits" / f"{name}.yaml"), full=True)
            == []
        )
    path = _sessions(tiny_root)[0]
    with EMGSessionData(path) as session:
        keystrokes = session.keystrokes
        expected = "".join(charset().key_to_char(k["key"]) for k in keystrokes)
        assert session.ground_truth().text == expected
        assert LabelData.from_prompts(session.prompts).text.endswith("⏎")
        n_rows = len(session)
    dataset = WindowedEMGDataset(
        path, window_length=4000, stride=4000, padding=(0, 0), jitter=False
    )
    assert len(dataset) == (n_rows - 4000) // 4000 + 1
    batch = WindowedEMGDataset.collate([dataset[0], dataset[1]])
    assert batch["inputs"].shape == (4000, 2, 2, 16)
    assert batch["inputs"].dtype.is_floating_point and str(batch["inputs"].dtype) == "torch.float32"
    assert int(batch["target_lengths"].sum()) > 0


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_other_seed_differs(tiny_root, tmp_path):
    again = tmp_path / "again"
    synthetic.generate_dataset(again, preset_config("tiny"), seed=3, preset="tiny", log=None)
    assert [p.name for p in _sessions(again)] == [p.name for p in _sessions(tiny_root)]
    for a, b in zip(_sessions(again), _sessions(tiny_root), strict=True):
        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            assert np.array_equal(fa["emg2qwerty/timeseries"][:], fb["emg2qwerty/timeseries"][:])
            assert dict(fa["emg2qwerty"].attrs) == dict(fb["emg2qwerty"].attrs)
    for name in ("metadata.csv", "splits/generic.yaml", "splits/user0.yaml", ds.MANIFEST):
        assert (again / name).read_text() == (tiny_root / name).read_text()

    config = preset_config("tiny")
    spec3 = ds.plan_sessions(config, 3)[0]
    spec4 = ds.plan_sessions(config, 4)[0]
    assert spec3.name != spec4.name
    emg3 = ds.generate_session(config, 3, spec3)[0]["emg_left"]
    emg4 = ds.generate_session(config, 4, spec4)[0]["emg_left"]
    n = min(len(emg3), len(emg4))
    assert not np.allclose(emg3[:n], emg4[:n])


# ----------------------------------------------------------------------------- physiology
def _triggered(emg: np.ndarray, times_s: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Mean rectified EMG around each time: (len(lags), 32)."""
    idx = np.round(times_s * FS).astype(int)
    idx = idx[(idx + lags[0] >= 0) & (idx + lags[-1] < len(emg))]
    return np.abs(emg[idx[:, None] + lags[None, :]]).mean(axis=0)


def test_keystroke_triggered_average_peaks_before_key_down_on_typing_band(long_sessions):
    lags = np.arange(-600, 401)  # -300 .. +200 ms
    for sessions in long_sessions.values():
        for emg, keys, info in sessions:
            hands = np.array(info["typing_hand"])
            t = np.array([k["t"] for k in keys])
            for hand in (0, 1):
                avg = _triggered(emg, t[hands == hand], lags)
                own = avg[:, hand * 16 : (hand + 1) * 16].mean(axis=1)
                other = avg[:, (1 - hand) * 16 : (2 - hand) * 16].mean(axis=1)
                peak_ms = lags[own.argmax()] / 2
                assert -150 <= peak_ms <= 0, peak_ms
                assert own.max() > 1.5 * np.median(own)
                assert own.max() > 1.3 * other[own.argmax()]
                # The burst is strongest on a few neighbouring channels, not uniform.
                profile = avg[own.argmax(), hand * 16 : (hand + 1) * 16]
                assert profile.max() > 2 * profile.min()


def _key_patterns(emg: np.ndarray, keys: list[dict], info: dict, min_count: int) -> dict:
    """Per key: 16-channel log-RMS in [-150, 0] ms on the typing band, rotation undone,
    minus the session's mean pattern (which removes the per-channel gains)."""
    hands = np.array(info["typing_hand"])
    idx = np.round(np.array([k["t"] for k in keys]) * FS).astype(int)
    ok = idx > 300
    sq = emg.astype(np.float64) ** 2
    feats = {0: [], 1: []}
    names = {0: [], 1: []}
    for i in np.flatnonzero(ok):
        h = hands[i]
        band = sq[idx[i] - 300 : idx[i], h * 16 : (h + 1) * 16].mean(axis=0)
        feats[h].append(np.roll(np.log(band), -info["rotation_offsets"][h]))
        names[h].append(keys[i]["key"] + f"@{h}")
    out = {}
    for h in (0, 1):
        f = np.array(feats[h])
        f -= f.mean(axis=0)
        arr = np.array(names[h])
        for name in set(names[h]):
            if (arr == name).sum() >= min_count:
                out[name] = f[arr == name].mean(axis=0)
    return out


def test_same_key_correlates_across_sessions_more_than_across_users(long_sessions):
    patterns = {
        u: [_key_patterns(*s, min_count=6) for s in sessions]
        for u, sessions in long_sessions.items()
    }

    def corr(a: dict, b: dict) -> float:
        common = sorted(set(a) & set(b))
        assert len(common) >= 5
        return float(np.mean([np.corrcoef(a[k], b[k])[0, 1] for k in common]))

    within = [corr(*patterns[u]) for u in patterns]
    across = [corr(patterns[0][i], patterns[1][j]) for i in range(2) for j in range(2)]
    assert min(within) > max(across) + 0.15, (within, across)


def test_spectrum_is_highpassed_and_shows_mains_when_present():
    config = DatasetConfig(
        n_users=2,
        n_heldout=1,
        sessions_per_user=2,
        heldout_sessions=4,
        session_seconds=20.0,
        params=GeneratorParams(mains_uv=3.0, mains_session_sigma=0.0),
    )
    data, _, _ = ds.generate_session(config, 0, ds.plan_sessions(config, 0)[0])
    emg = np.concatenate([data["emg_left"], data["emg_right"]], axis=1)
    freqs, psd = signal.welch(emg, fs=FS, nperseg=1000, axis=0)
    total = psd.sum(axis=0)
    assert np.all(psd[freqs < 400].sum(axis=0) > 0.7 * total)
    assert np.all(psd[freqs < 20].sum(axis=0) < 0.05 * total)
    line = psd[freqs == 60].mean()
    neighbours = psd[(np.abs(freqs - 60) >= 6) & (np.abs(freqs - 60) <= 16)].mean()
    assert line > 3 * neighbours


# ----------------------------------------------------------------------------- typing statistics
def test_typing_statistics_fall_in_the_measured_ranges():
    p = GeneratorParams()
    corpus = load_corpus()
    keys, ikis, holds, rollover, per_user_bs = [], [], [], [], []
    for user in range(24):
        rng = np.random.default_rng(user)
        typing = simulate_typing(rng, sample_typist(rng, p), corpus, 90.0, p)
        k = np.array(typing.keys)
        keys.append(k)
        ikis.append(np.diff(typing.logged_press))
        holds.append(typing.logged_release - typing.logged_press)
        rollover.append(typing.logged_press[1:] < typing.logged_release[:-1])
        per_user_bs.append(np.mean(k == "Key.backspace"))
    k = np.concatenate(keys)
    iki = np.concatenate(ikis)
    backspace = np.mean(k == "Key.backspace")
    assert 0.025 < backspace < 0.07  # 4.3% in the real logs
    assert max(per_user_bs) > 3 * max(min(per_user_bs), 1e-3)  # users differ (0.9-12%)
    assert 0.12 < np.mean(np.concatenate(rollover)) < 0.32  # 21%
    assert 0.12 < np.median(iki) < 0.2  # 165 ms
    assert 0.075 <= np.median(np.concatenate(holds)) <= 0.11  # 90 ms
    assert 0.02 < np.mean(k == "Key.enter") < 0.05  # 3.3%
    assert 0.09 < np.mean(k == "Key.space") < 0.15  # 10.8%
    on_grid = np.abs(iki / 0.015 - np.round(iki / 0.015)) * 15 < 1.0
    assert 0.7 < np.mean(on_grid) < 0.92  # 82%


def test_prompts_come_from_a_user_text_file(tmp_path):
    syllables = ("ka", "lo", "mi", "nu", "pe"), ("ra", "so", "ti", "vu", "wy")
    words = [a + b for a in syllables[0] for b in syllables[1]]
    path = tmp_path / "prose.txt"
    path.write_text(" ".join(f"{w} {w[::-1]}." for w in words) * 3)
    corpus = load_corpus(str(path))
    allowed = {w.rstrip(".,") for w in path.read_text().split()} | set(PANGRAM.split())
    p = GeneratorParams()
    rng = np.random.default_rng(0)
    typing = simulate_typing(rng, sample_typist(rng, p), corpus, 40.0, p)
    assert len(typing.prompts) >= 3
    for _, _, text in typing.prompts:
        assert {w.rstrip(".,") for w in text.split()} <= allowed
    (tmp_path / "short.txt").write_text("too few words here")
    with pytest.raises(ValueError, match="short.txt"):
        load_corpus(str(tmp_path / "short.txt"))


# ----------------------------------------------------------------------------- caching / CLI
def _fast_overrides() -> dict:
    return {"session_seconds": 6.0}


def test_ensure_dataset_generates_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMG2QWERTY_SSM_CACHE", str(tmp_path / "cache"))
    calls = []
    real = synthetic.generate_dataset

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **{**kwargs, "log": None})

    monkeypatch.setattr(synthetic, "generate_dataset", counting)
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(synthetic.ensure_dataset("tiny", 5, **_fast_overrides()))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = tmp_path / "cache" / "synthetic" / "tiny-seed5"
    assert results == [expected, expected] and len(calls) == 1
    assert synthetic.ensure_dataset("tiny", 5, **_fast_overrides()) == expected and len(calls) == 1
    assert len(list(expected.glob("*.hdf5"))) == 16
    assert sorted(p.name for p in expected.parent.iterdir() if not p.name.endswith(".lock")) == [
        "tiny-seed5"
    ]


def test_ensure_dataset_crash_leaves_no_complete_looking_dataset(tmp_path, monkeypatch):
    root = tmp_path / "ds"

    def crash(out, *args, **kwargs):
        (Path(out) / "half.hdf5").write_text("partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(synthetic, "generate_dataset", crash)
    with pytest.raises(RuntimeError, match="killed"):
        synthetic.ensure_dataset("tiny", 0, root=root, **_fast_overrides())
    assert not root.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_ensure_dataset_refuses_to_replace_foreign_directory(tmp_path, monkeypatch):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    monkeypatch.setattr(
        synthetic,
        "generate_dataset",
        lambda out, *a, **k: (Path(out) / ds.MANIFEST).write_text("{}"),
    )
    with pytest.raises(FileExistsError, match="notes.txt"):
        synthetic.ensure_dataset("tiny", 0, root=root)
    assert (root / "notes.txt").read_text() == "keep me"


def test_regenerating_into_a_directory_replaces_the_previous_sessions(tmp_path):
    config = preset_config("tiny", **_fast_overrides())
    synthetic.generate_dataset(tmp_path, config, seed=1, log=None)
    (tmp_path / "notes.txt").write_text("not ours")
    manifest = synthetic.generate_dataset(tmp_path, config, seed=2, log=None)
    assert sorted(p.stem for p in tmp_path.glob("*.hdf5")) == sorted(manifest["sessions"])
    assert (tmp_path / "notes.txt").read_text() == "not ours"
    assert ds.is_complete(tmp_path, "custom", 2, config)
    assert not ds.is_complete(tmp_path, "custom", 1, config)


def test_cli_skip_existing_and_bad_input(tiny_root, capsys, tmp_path):
    manifest = tiny_root / ds.MANIFEST
    before = manifest.stat().st_mtime_ns
    assert (
        cli_main(["--preset", "tiny", "--out", str(tiny_root), "--seed", "3", "--skip-existing"])
        == 0
    )
    assert "skipping" in capsys.readouterr().out
    assert manifest.stat().st_mtime_ns == before
    # A different seed is not "existing": it would regenerate (checked without writing).
    assert not ds.is_complete(tiny_root, "tiny", 4, preset_config("tiny"))

    assert (
        cli_main(
            ["--preset", "tiny", "--out", str(tmp_path), "--users", "2", "--heldout-users", "2"]
        )
        == 2
    )
    assert "n_users > n_heldout" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no_such_knob"):
        cli_main(["--out", str(tmp_path), "--param", "no_such_knob=1"])
    with pytest.raises(ValueError, match="same_finger_similarity"):
        GeneratorParams(same_finger_similarity=1.5)
    with pytest.raises(ValueError, match="unknown synthetic preset 'huge'"):
        preset_config("huge")


def test_demo_preset_knobs_and_cli_params_apply_on_top_of_the_preset():
    from emg2qwerty_ssm.synthetic.__main__ import _parse_params
    from emg2qwerty_ssm.synthetic.params import DEMO_PARAMS

    defaults = GeneratorParams()
    demo = preset_config("demo").params
    # The demo preset must stay easier than the physiological defaults on the knobs that
    # decide whether TC_S4_small leaves CTC's blank plateau within minutes (docs/synthetic.md).
    assert demo.same_finger_similarity < defaults.same_finger_similarity
    assert demo.recruitment_noise < defaults.recruitment_noise
    assert demo.noise_uv < defaults.noise_uv
    assert demo.burst_sd_ms < defaults.burst_sd_ms
    assert preset_config("tiny").params == defaults
    assert preset_config("demo").digest() != preset_config("demo", params=defaults).digest()
    # `--param` changes one knob of the preset's own set, not of the defaults.
    changed = _parse_params(["noise_uv=2.0"], DEMO_PARAMS)
    assert changed.noise_uv == 2.0
    assert changed.same_finger_similarity == DEMO_PARAMS.same_finger_similarity
    assert _parse_params(["noise_uv=2.0"]).same_finger_similarity == defaults.same_finger_similarity
