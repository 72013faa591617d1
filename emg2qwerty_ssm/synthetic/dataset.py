"""Whole-dataset generation: users, sessions, HDF5 files, metadata.csv, split YAMLs.

File layout follows docs/format.md#session-files exactly: ``<root>/<session>.hdf5`` with group
``emg2qwerty`` holding the compound dataset ``timeseries`` (``emg_left`` f4 (16,),
``emg_right`` f4 (16,), ``time`` f8 unix seconds at 2 kHz) and the group attributes
``session_name``, ``user``, ``condition``, ``duration_mins``, ``keystrokes`` (JSON list of
``{key, start, end}``) and ``prompts`` (JSON list of ``{name: "text_prompt", start, end,
payload: {text}}``); ``<root>/metadata.csv`` with the emg2qwerty columns; and
``<root>/splits/{generic,user0,...}.yaml`` in the real split format (docs/format.md#splits).

Randomness: one ``numpy.random.SeedSequence`` per (seed, user, session, purpose), so a
session's bytes depend only on the seed, its indices and the parameters, never on how many
other sessions were generated or in which order.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

from emg2qwerty_ssm.data import METADATA_COLUMNS  # the release's metadata.csv columns

from .emg import render, sample_anatomy, sample_session_effects
from .params import DatasetConfig
from .text import load_corpus
from .typing import SessionTyping, sample_typist, simulate_typing

__all__ = [
    "MANIFEST",
    "ForeignFilesError",
    "owned_files",
    "GENERATOR_VERSION",
    "SessionSpec",
    "generate_dataset",
    "generate_session",
    "read_manifest",
    "plan_sessions",
]

MANIFEST = "synthetic_manifest.json"
GENERATOR_VERSION = 1
TIMESERIES_DTYPE = np.dtype(
    [("emg_left", "<f4", (16,)), ("emg_right", "<f4", (16,)), ("time", "<f8")]
)
# Purposes of the per-session random streams (text and signal kept apart so signal knobs
# never change the typed text).
_USER_TYPING, _USER_SIGNAL, _USER_META = 0, 1, 2
_SESSION_TYPING, _SESSION_EFFECTS, _SESSION_RENDER = 0, 1, 2
_POPULATION = 1_000_000  # spawn key of the stream shared by all users of a dataset


@dataclass(frozen=True)
class SessionSpec:
    """One session to generate: user index/id, session index, name and unix start time."""

    user_index: int
    user_id: int
    session_index: int
    name: str
    start_unix: int


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=key))


def plan_sessions(config: DatasetConfig, seed: int) -> list[SessionSpec]:
    """Names, user ids and start times of all sessions (cheap; no signal generated).

    Session names mimic the real ones (``<date>-<unix start>-keystrokes-<study>-<uuid>``,
    one uuid per user); sessions of a user come in bursts (62% start < 2 h after the
    previous one, median gap 43 min; SE §1 "sessions").
    """
    specs: list[SessionSpec] = []
    used_ids: set[int] = set()
    for u in range(config.n_users):
        rng = _rng(seed, u, _USER_META)
        user_id = int(rng.integers(10_000_000, 100_000_000))
        while user_id in used_ids:
            user_id = int(rng.integers(10_000_000, 100_000_000))
        used_ids.add(user_id)
        user_uuid = uuid.UUID(bytes=rng.bytes(16), version=4)
        t = int(dt.datetime(2021, 1, 4, tzinfo=dt.UTC).timestamp())
        t += int(rng.integers(0, 150 * 86400))
        n_sessions = config.heldout_sessions if u < config.n_heldout else config.sessions_per_user
        for s in range(n_sessions):
            date = dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d")
            name = f"{date}-{t}-keystrokes-synthetic@{seed}-{user_uuid}"
            specs.append(SessionSpec(u, user_id, s, name, t))
            if rng.random() < 0.62:
                gap = 2580 * np.exp(rng.normal(0, 0.6))  # same sitting, median 43 min
            else:
                gap = rng.uniform(3, 96) * 3600
            t += int(config.session_seconds + gap)
    return specs


class _UserModel:
    """Per-user typist traits and anatomy, built once per user."""

    def __init__(self, config: DatasetConfig, seed: int, user_index: int) -> None:
        p = config.params
        self.traits = sample_typist(_rng(seed, user_index, _USER_TYPING), p)
        self.anatomy = sample_anatomy(
            _rng(seed, user_index, _USER_SIGNAL), p, self.traits.remap, _rng(seed, _POPULATION)
        )


def generate_session(
    config: DatasetConfig, seed: int, spec: SessionSpec, user: _UserModel | None = None
) -> tuple[np.ndarray, dict[str, object], SessionTyping]:
    """Generate one session: (structured timeseries (T,), group attributes, typing)."""
    p = config.params
    user = user or _UserModel(config, seed, spec.user_index)
    key = (spec.user_index, 1000 + spec.session_index)
    typing = simulate_typing(
        _rng(seed, *key, _SESSION_TYPING),
        user.traits,
        load_corpus(config.text_file),
        config.session_seconds,
        p,
    )
    effects = sample_session_effects(_rng(seed, *key, _SESSION_EFFECTS), p, typing.duration_s)
    emg = render(_rng(seed, *key, _SESSION_RENDER), user.anatomy, effects, typing, p)
    n_t = emg.shape[0]
    data = np.empty(n_t, dtype=TIMESERIES_DTYPE)
    data["emg_left"] = emg[:, :16]
    data["emg_right"] = emg[:, 16:]
    data["time"] = spec.start_unix + np.arange(n_t) / p.sample_rate_hz
    t0 = float(spec.start_unix)
    keystrokes = [
        {"key": k, "start": t0 + float(s), "end": t0 + float(e)}
        for k, s, e in zip(typing.keys, typing.logged_press, typing.logged_release, strict=True)
    ]
    prompts = [
        {"name": "text_prompt", "start": t0 + s, "end": t0 + e, "payload": {"text": text}}
        for s, e, text in typing.prompts
    ]
    attrs: dict[str, object] = {
        "session_name": spec.name,
        "user": str(spec.user_id),
        "condition": "on_keyboard",
        "duration_mins": float(n_t / p.sample_rate_hz / 60.0),
        "keystrokes": json.dumps(keystrokes),
        "prompts": json.dumps(prompts),
        # Extra attributes are allowed (docs/format.md#session-files); real files carry the first
        # two.
        "daq_sample_rate": float(p.sample_rate_hz),
        "daq_channels": 16,
        "synthetic_info": json.dumps(
            {
                "generator_version": GENERATOR_VERSION,
                "seed": seed,
                "user_index": spec.user_index,
                "session_index": spec.session_index,
                "typing_hand": [int(h) for h in typing.hand],
                **effects.info,
            }
        ),
    }
    return data, attrs, typing


def _write_session(path: Path, data: np.ndarray, attrs: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w", track_order=True) as f:
        group = f.create_group("emg2qwerty")
        group.create_dataset("timeseries", data=data, track_times=False)
        for key, value in attrs.items():
            group.attrs[key] = value
    os.replace(tmp, path)


def _split_entries(specs: list[SessionSpec]) -> list[dict[str, object]]:
    return [{"user": s.user_id, "session": s.name} for s in specs]


def make_splits(config: DatasetConfig, specs: list[SessionSpec], seed: int) -> dict[str, dict]:
    """Split dicts following emg2qwerty's generate_splits.py rules (docs/format.md#splits).

    Held-out users: 2 test, 2 val, rest train (1/1 when they have fewer than 6 sessions).
    Other users: 2 val (1 below 4 sessions), rest train. ``generic`` trains/validates on the
    other users and tests on the union of the held-out users' test sessions.
    """
    by_user: dict[int, list[SessionSpec]] = {}
    for s in specs:
        by_user.setdefault(s.user_index, []).append(s)
    splits: dict[str, dict] = {}
    generic: dict[str, list[dict[str, object]]] = {"train": [], "val": [], "test": []}
    for u, sessions in sorted(by_user.items()):
        order = _rng(seed, u, 3).permutation(len(sessions))
        shuffled = [sessions[i] for i in order]
        if u < config.n_heldout:
            n = 2 if len(sessions) >= 6 else 1
            test, val, train = shuffled[:n], shuffled[n : 2 * n], shuffled[2 * n :]
            splits[f"user{u}"] = {
                "train": _split_entries(train),
                "val": _split_entries(val),
                "test": _split_entries(test),
            }
            generic["test"] += _split_entries(test)
        else:
            n = 2 if len(sessions) >= 4 else 1
            generic["val"] += _split_entries(shuffled[:n])
            generic["train"] += _split_entries(shuffled[n:])
    return {"generic": generic, **splits}


def _write_split(path: Path, name: str, split: dict) -> None:
    body = yaml.safe_dump({"user": name, "dataset": split}, sort_keys=False)
    path.write_text("# @package _global_\n" + body)


class ForeignFilesError(FileExistsError):
    """The target directory holds files this generator did not write (e.g. a real dataset)."""

    def __init__(self, root: Path, foreign: list[str]) -> None:
        shown = ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
        super().__init__(
            f"{root} holds {len(foreign)} file(s) the synthetic generator did not write "
            f"({shown}); refusing to delete or overwrite them. If this is the real emg2qwerty "
            f"dataset, pass dataset=real dataset.root={root}; otherwise point dataset.root at "
            "an empty or new directory"
        )
        self.root, self.foreign = Path(root), sorted(foreign)


def owned_files(root: Path) -> set[str]:
    """Paths (relative, POSIX) that the manifest at ``root`` says the generator wrote there.

    Empty when there is no readable manifest: then nothing in ``root`` is ours. Manifests of
    older versions have no ``files`` list; their files are derived from sessions and splits.
    """
    manifest = read_manifest(root)
    return set() if manifest is None else owned_files_of(manifest)


def owned_files_of(manifest: dict) -> set[str]:
    """The files a manifest lists (see :func:`owned_files`)."""
    files = manifest.get("files")
    if files is None:
        files = [f"{s}.hdf5" for s in manifest.get("sessions", [])]
        files += ["metadata.csv", *(f"splits/{n}.yaml" for n in manifest.get("splits", []))]
    return {str(f) for f in files} | {MANIFEST}


def _check_collisions(out: Path, targets: list[str]) -> None:
    """Refuse to overwrite an existing file at ``out`` that no manifest of ours lists."""
    ours = owned_files(out)
    foreign = [t for t in targets if t not in ours and (out / t).exists()]
    if foreign:
        raise ForeignFilesError(out, foreign)


def read_manifest(root: Path) -> dict | None:
    """The manifest of a complete dataset at ``root``, or None if absent/unreadable."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: Path, preset: str, seed: int, config: DatasetConfig) -> bool:
    """True when ``root`` holds a finished dataset of exactly this preset/seed/config."""
    manifest = read_manifest(root)
    if manifest is None:
        return False
    if (manifest.get("preset"), manifest.get("seed"), manifest.get("config_digest")) != (
        preset,
        seed,
        config.digest(),
    ):
        return False
    return all((Path(root) / f"{s}.hdf5").is_file() for s in manifest.get("sessions", []))


def generate_dataset(
    out: Path, config: DatasetConfig, seed: int, preset: str = "custom", log=print
) -> dict:
    """Write the whole dataset into ``out``; the manifest is written last (completion mark).

    Returns the manifest dict (with ``generation_seconds`` and ``emg_seconds`` added).
    """
    out = Path(out)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    started = time.perf_counter()
    specs = plan_sessions(config, seed)
    split_names = sorted(make_splits(config, specs, seed))
    targets = [f"{s.name}.hdf5" for s in specs] + ["metadata.csv"]
    targets += [f"splits/{n}.yaml" for n in split_names]
    # Never overwrite what we did not write (a real dataset's metadata.csv, a user's file).
    _check_collisions(out, [*targets, MANIFEST])
    previous = read_manifest(out)
    if manifest_path.exists():
        manifest_path.unlink()  # regenerating: the old completion mark no longer holds
    rows = []
    emg_seconds = 0.0
    user: _UserModel | None = None
    for i, spec in enumerate(specs):
        if user is None or spec.session_index == 0:
            user = _UserModel(config, seed, spec.user_index)
        data, attrs, typing = generate_session(config, seed, spec, user)
        _write_session(out / f"{spec.name}.hdf5", data, attrs)
        emg_seconds += data.shape[0] / config.params.sample_rate_hz
        rows.append(
            {
                "user": spec.user_id,
                "session": spec.name,
                "condition": "on_keyboard",
                "duration_mins": attrs["duration_mins"],
                "num_keystrokes": len(typing.keys),
                "num_prompts": len(typing.prompts),
                "quality_check_tags": "[]",
            }
        )
        if log is not None and ((i + 1) % -(-len(specs) // 10) == 0 or i + 1 == len(specs)):
            log(f"[synthetic] {i + 1}/{len(specs)} sessions, {emg_seconds / 60:.1f} min of EMG")
    with open(out / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    # Sessions of a previous generation into this directory that this one does not rewrite
    # (another seed or size) would otherwise linger beside the new metadata and splits.
    # Only files the previous manifest lists are removed: never anything else.
    if previous is not None:
        keep = set(targets)
        for rel in owned_files_of(previous) - keep - {MANIFEST}:
            (out / rel).unlink(missing_ok=True)
    splits = make_splits(config, specs, seed)
    for name, split in splits.items():
        _write_split(out / "splits" / f"{name}.yaml", name, split)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "config_digest": config.digest(),
        "config": config.to_dict(),
        "splits": sorted(splits),
        "sessions": [s.name for s in specs],
        "files": targets,
    }
    tmp = manifest_path.with_name(manifest_path.name + ".partial")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, manifest_path)
    elapsed = time.perf_counter() - started
    if log is not None:
        log(
            f"[synthetic] wrote {len(specs)} sessions ({emg_seconds / 60:.1f} min of EMG) to {out} "
            f"in {elapsed:.1f} s: {emg_seconds / elapsed:.0f} s of EMG per second"
        )
    return {**manifest, "generation_seconds": elapsed, "emg_seconds": emg_seconds}
