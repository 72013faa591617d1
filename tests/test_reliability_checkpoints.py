"""Lost work 3 and the checkpoint cases: atomic+fsync writes, a corrupt last.ckpt falls back
to the newest valid checkpoint, checksums and finiteness name the tensor, weights_only loading
names the blocked global, non-checkpoint files say what they are, interpolations are never
resolved from a converted checkpoint."""

from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from test_reliability_resume import KillAt, SimulatedKill, StartRecorder
from trainer_helpers import REPO_ROOT, cache_dir, compose_cfg

from emg2qwerty_ssm.checkpointing import CheckpointError
from emg2qwerty_ssm.models.checkpoints import load_model, save_model
from emg2qwerty_ssm.results import write_results
from emg2qwerty_ssm.resume import AtomicCheckpointIO, choose_resume_checkpoint
from emg2qwerty_ssm.train import train

BASE = ["debug=smoke", "trainer.max_epochs=3", "evaluation.splits=[test]"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return cache_dir(tmp_path_factory)


def _ckpt(**tensors) -> dict:
    return {"state_dict": tensors or {"w": torch.arange(256, dtype=torch.float32)}, "epoch": 1}


# ----------------------------------------------------------------------------- atomic writes
def test_a_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(), target)
    before = target.read_bytes()

    def disk_full(obj, handle):
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint(_ckpt(), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_writes_fsync_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os,
        "replace",
        lambda a, b: (events.append(("replace", os.path.dirname(a))), real_replace(a, b))[1],
    )
    AtomicCheckpointIO().save_checkpoint(_ckpt(), tmp_path / "a.ckpt")
    write_results(
        tmp_path,
        {
            k: None
            for k in json.loads(
                '["model","params","macs_per_second","decoder","user","metrics","CER","checkpoint","config_hash","git_commit","wall_time_s","config"]'
            )
        },
    )
    # temp file in the same directory, fsync, rename, fsync of the directory; twice
    assert events == ["fsync", ("replace", str(tmp_path)), "fsync"] * 2


# ----------------------------------------------------------------------------- corrupt last.ckpt
@pytest.mark.slow
def test_truncated_last_ckpt_falls_back_to_the_newest_valid_checkpoint(tmp_path, cache, caplog):
    with pytest.raises(SimulatedKill):
        train(compose_cfg(BASE, tmp_path, cache), callbacks=[KillAt(2, 1)])
    last = tmp_path / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # what a full disk used to leave
    valid = choose_resume_checkpoint(tmp_path / "checkpoints")
    assert valid is not None and valid.name.startswith(("val_", "valcont_"))
    recorder = StartRecorder()
    with caplog.at_level(logging.WARNING, logger="emg2qwerty_ssm.resume"):
        train(compose_cfg(BASE, tmp_path, cache), callbacks=[recorder])
    warning = next(r.getMessage() for r in caplog.records if "newest valid" in r.getMessage())
    assert str(last) in warning and str(valid) in warning and "truncated" in warning
    epoch = int(valid.stem.split("_")[1])
    assert recorder.start == (epoch + 1, 3 * (epoch + 1))


def test_no_valid_checkpoint_refuses_instead_of_starting_over(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file.*resume=false"):
        choose_resume_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- tensor integrity
def test_flipped_bytes_inside_a_tensor_are_caught_and_named(tmp_path):
    weights = torch.arange(1000, dtype=torch.float32)
    path = tmp_path / "c.ckpt"
    AtomicCheckpointIO().save_checkpoint(_ckpt(**{"layer.weight": weights}), path)
    raw = bytearray(path.read_bytes())
    at = raw.find(weights.numpy().tobytes()[400:440])
    raw[at + 2] ^= 0xFF  # still a finite float: only the checksum can tell
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="'layer.weight' is corrupted"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_non_finite_weights_are_refused_with_the_tensor_named(tmp_path, cache):
    from emg2qwerty_ssm.models.model import build_model

    cfg = compose_cfg(["debug=smoke"], None, cache)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True))
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    path = save_model(model, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match=r"'classifier.weight' holds 1 non-finite"):
        load_model(path)
    with pytest.raises(CheckpointError, match="classifier.weight"):
        train(compose_cfg(["debug=smoke", "train=false", f"checkpoint={path}"], tmp_path, cache))


# ----------------------------------------------------------------------------- safe loading
class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_last_ckpt_is_refused_even_with_the_torch_override(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "x": _Evil()}, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"refused to unpickle \(it needs posix\.system\)"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"system"):
        choose_resume_checkpoint(tmp_path / "checkpoints")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "empty file"),
        (b"just some notes\n", "text file"),
        (json.dumps({"CER": 1.0}).encode(), "JSON file"),
        (None, "truncated"),
        (pickle.dumps([1, 2]) + b"\x00garbage", "not a checkpoint|cannot load"),
    ],
)
def test_a_file_that_is_no_checkpoint_says_what_it_is(tmp_path, content, says):
    path = tmp_path / "given.ckpt"
    if content is None:
        torch.save(_ckpt(), path)
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=says) as err:
        load_model(path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- conversion
def test_converting_never_resolves_env_interpolations(tmp_path, reference_dir, monkeypatch):
    seed = torch.load(
        reference_dir / "seed_checkpoint" / "TC_S4_small.ckpt",
        map_location="cpu",
        weights_only=False,
    )
    seed["hyper_parameters"]["api_token"] = OmegaConf.create({"t": "${oc.env:RELIABILITY_SECRET}"})
    src, out = tmp_path / "seed.ckpt", tmp_path / "out.ckpt"
    torch.save(seed, src)
    env = {**os.environ, "RELIABILITY_SECRET": "hunter2-do-not-leak", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "scripts/convert_seed_checkpoint.py", str(src), str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"hunter2" not in out.read_bytes()
    meta = torch.load(out, weights_only=True)["metadata"]
    assert meta["seed"]["hyper_parameters"]["api_token"]["t"] == "${oc.env:RELIABILITY_SECRET}"
    assert "emg2qwerty_ssm_integrity" in torch.load(out, weights_only=True)


def test_an_error_raised_while_a_preemption_exit_unwinds_is_not_a_failed_job() -> None:
    """submitit exits with SystemExit on preemption; inside torch.save that surfaces as a
    RuntimeError; the exit itself is re-raised (not failed.json, not the RuntimeError, which
    submitit would record as the job's result before the requeued job ran)."""
    from emg2qwerty_ssm.train import _interruption

    def save_interrupted_by_preemption() -> None:
        try:
            raise SystemExit(-1)  # the signal handler's exit
        finally:
            raise RuntimeError("unexpected pos 4578112 vs 4578000")  # torch's zip writer

    with pytest.raises(RuntimeError) as info:
        save_interrupted_by_preemption()
    stop = _interruption(info.value)
    assert isinstance(stop, SystemExit) and stop.code == -1
    assert _interruption(RuntimeError("a real failure")) is None
    chained = ValueError("bad config")
    chained.__cause__ = KeyError("x")
    assert _interruption(chained) is None
