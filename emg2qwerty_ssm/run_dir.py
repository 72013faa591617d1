"""Run-directory provenance: a run dir belongs to one config.

The first run writes ``<run dir>/run_config.json`` (the resolved config and its hash). A rerun
into the same directory with a config that computes something else (the hash of
:func:`emg2qwerty_ssm.results.config_hash`: paths, devices, loggers excluded) is refused with
the differing keys named, because it would resume the old run's checkpoint under the new
config and ``results.json`` would then describe a run that never happened. The explicit
override ``allow_config_change=true`` continues anyway and records every change in
``run_config.json`` (``history``) and in ``results.json`` (``config_history``).

:func:`finished_results` lets a rerun skip a run that already finished (``skip_finished=true``,
set by the ``make pareto`` sweep): a complete ``results.json`` of the same config hash.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.results import (
    _HASH_EXCLUDED,
    RESULTS_FILE,
    _plain,
    config_hash,
    read_results,
)

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"


class RunDirConflict(RuntimeError):
    """The run directory holds a run of a different config."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every leaf that differs (hash-excluded keys left out)."""
    a = _flatten({k: v for k, v in old.items() if k not in _HASH_EXCLUDED})
    b = _flatten({k: v for k, v in new.items() if k not in _HASH_EXCLUDED})
    missing = object()
    return [
        f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def claim_run_dir(run_dir: Path, cfg: DictConfig | Mapping[str, Any]) -> list[dict[str, Any]]:
    """Record (or check) the config of ``run_dir``; returns the config history of the dir.

    Raises :class:`RunDirConflict` on a different config unless ``allow_config_change``; a dir
    whose earlier run left no checkpoint and no results (it failed before training) is
    simply re-claimed.
    """
    path = run_dir / RUN_CONFIG
    has_work = (run_dir / RESULTS_FILE).is_file() or any(run_dir.glob("checkpoints/*.ckpt"))
    plain = _plain(cfg)
    digest = config_hash(cfg)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if not path.is_file() or not has_work:
        record = {"config_hash": digest, "config": plain, "history": [], "created_utc": now}
        atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
        return []
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise RunDirConflict(f"{path} is not valid JSON ({err}); cannot check provenance") from err
    if record.get("config_hash") == digest:
        return list(record.get("history", []))
    diff = config_diff(record.get("config", {}), plain)
    shown = "; ".join(diff[:8]) + (f"; ... ({len(diff)} in all)" if len(diff) > 8 else "")
    if not bool(plain.get("allow_config_change", False)):
        raise RunDirConflict(
            f"{run_dir} already holds a run of another config ({shown}); resuming it would "
            "train the old checkpoint under the new settings. Use a new run_dir, or pass "
            "allow_config_change=true to continue this run with the new config (the change is "
            "recorded in run_config.json and results.json)"
        )
    log.warning("run dir %s: continuing with a changed config (%s)", run_dir, shown)
    history = [
        *record.get("history", []),
        {"from_hash": record.get("config_hash"), "to_hash": digest, "changes": diff, "at": now},
    ]
    record.update(config_hash=digest, config=plain, history=history)
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return history


def finished_results(run_dir: Path, cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``results.json`` of ``run_dir`` when it is complete and of this config, else None.

    Complete: valid JSON with every required key (a kill never leaves a partial file, since
    results.json is written atomically, but a hand-edited or foreign one may lack keys). A
    results.json of another config is not "finished": the run goes on and
    :func:`claim_run_dir` then refuses it by name.
    """
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = read_results(path)
    except ValueError as err:
        log.warning("%s is not a complete result (%s); running again", path, err)
        return None
    if results.get("config_hash") != config_hash(cfg):
        log.warning("%s holds a run of another config; not skipped", path)
        return None
    return results
