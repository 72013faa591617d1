"""Lost work 1: a synthetic preset pointed at a directory it did not write never deletes or
overwrites anything there; it refuses and suggests ``dataset=real``."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from _emg_files import write_session
from trainer_helpers import REPO_ROOT, compose_cfg

from emg2qwerty_ssm import synthetic
from emg2qwerty_ssm.synthetic import ForeignFilesError
from emg2qwerty_ssm.synthetic import dataset as ds
from emg2qwerty_ssm.synthetic.params import preset_config
from emg2qwerty_ssm.train import train


def _real_dataset(root: Path) -> dict[str, str]:
    """A directory shaped like the real release: session files and metadata.csv."""
    root.mkdir()
    for name in ("2021-06-03-1622765527-keystrokes-dca-study@1-0efbe614",):
        write_session(root / f"{name}.hdf5", n_rows=400)
    (root / "metadata.csv").write_text("user,session\n7,x\n")
    return _snapshot(root)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_train_with_synthetic_preset_on_a_real_dataset_refuses_and_keeps_it(tmp_path):
    root = tmp_path / "emg2qwerty"
    before = _real_dataset(root)
    # The reported command: the default synthetic preset with a real dataset.root.
    cfg = compose_cfg(["user=user3", f"dataset.root={root}"], tmp_path / "run")
    with pytest.raises(ForeignFilesError, match="dataset=real") as err:
        train(cfg)
    assert "metadata.csv" in str(err.value)
    assert _snapshot(root) == before
    # nothing left beside it either (no temporary or stale copies)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "emg2qwerty",
        "run",
    ]


def test_ensure_dataset_refuses_before_generating(tmp_path, monkeypatch):
    root = tmp_path / "real"
    before = _real_dataset(root)
    monkeypatch.setattr(synthetic, "generate_dataset", lambda *a, **k: pytest.fail("generated"))
    with pytest.raises(ForeignFilesError, match="dataset=real"):
        synthetic.ensure_dataset("tiny", 0, root=root)
    assert _snapshot(root) == before


def test_cli_generation_into_a_real_dataset_overwrites_nothing(tmp_path):
    root = tmp_path / "real"
    before = _real_dataset(root)
    proc = subprocess.run(
        [sys.executable, "-m", "emg2qwerty_ssm.synthetic", "--preset", "tiny", "--out", str(root)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "metadata.csv" in proc.stderr and "dataset=real" in proc.stderr
    assert _snapshot(root) == before


def test_a_manifest_only_owns_the_files_it_lists(tmp_path):
    config = preset_config("tiny", session_seconds=6.0)
    synthetic.generate_dataset(tmp_path, config, seed=1, log=None)
    manifest = ds.read_manifest(tmp_path)
    assert set(manifest["files"]) >= {"metadata.csv", "splits/generic.yaml"}
    # A foreign file appears beside our output: regeneration keeps it, replacement refuses.
    (tmp_path / "splits" / "mine.yaml").write_text("train: []\n")
    synthetic.generate_dataset(tmp_path, config, seed=2, log=None)
    assert (tmp_path / "splits" / "mine.yaml").read_text() == "train: []\n"
    with pytest.raises(ForeignFilesError, match="splits/mine.yaml"):
        synthetic.ensure_dataset("tiny", 0, root=tmp_path, session_seconds=6.0)
    # Without the foreign file, a different preset/seed replaces a directory that is all ours.
    (tmp_path / "splits" / "mine.yaml").unlink()
    out = synthetic.ensure_dataset("tiny", 3, root=tmp_path, session_seconds=6.0)
    assert ds.is_complete(out, "tiny", 3, config)
