"""``results.json``: the one file every run leaves in its run directory.

Sweeps, Optuna and the Pareto tool read these files, so the layout is a shared interface
(see docs/training.md). Required keys: ``model``, ``params``, ``macs_per_second``, ``decoder``,
``user``, ``metrics`` (``{"<split>/<protocol>/<decoder>": {"CER", "missing", "extra",
"substituted", ...}}``, with emg2qwerty's ``IER``/``DER``/``SER`` as aliases), the
flat ``CER`` (test split, paper protocol), ``checkpoint``, ``config_hash``, ``git_commit``,
``wall_time_s`` and ``config`` (the resolved config).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emg2qwerty_ssm.atomic_io import atomic_write_text

log = logging.getLogger(__name__)

#: the file name every reader and writer uses
RESULTS_FILE = "results.json"
#: what a failed job of a multirun leaves instead (the error and its traceback)
FAILED_FILE = "failed.json"
REQUIRED_KEYS = (
    "model",
    "params",
    "macs_per_second",
    "decoder",
    "user",
    "metrics",
    "CER",
    "checkpoint",
    "config_hash",
    "git_commit",
    "wall_time_s",
    "config",
)
#: config keys that say where/how a run executes, not what it computes; left out of the hash
_HASH_EXCLUDED = (
    "run_dir",
    "hydra",
    "trainer",
    "logger",
    "cluster",
    "num_workers",
    "resume",
    "allow_config_change",
    "skip_finished",
    "elastic_threads",  # set only where the thread count leaves the floats unchanged
)


def metric_key(split: str, protocol: str, decoder: str) -> str:
    """The ``metrics`` key of one evaluation, e.g. ``test/paper/greedy``."""
    return f"{split}/{protocol}/{decoder}"


# ---------------------------------------------------------------------------- the key grammar
def lookup(results: Mapping[str, Any], key: str) -> float:
    """One number of a results mapping, by the key grammar every reader uses.

    The trainer's ``optimized_metric``, the Optuna sweeper's ``objectives`` and the Pareto
    tool's ``--metric`` all name a value this way, tried in this order:

    1. a top-level number: ``CER`` (test split, paper protocol), ``macs_per_second``,
       ``params``, ``wall_time_s``;
    2. a metric logged during training: ``val/CER`` is the best monitored value
       (``logged["best/val/CER"]``) when there is one, else the last; ``val_continuous/CER``;
    3. a ``metrics`` entry, i.e. its CER: ``test/paper/greedy``;
    4. a ``metrics`` entry and a rate: ``val/paper/greedy/SER``;
    5. a dotted path into nested mappings (keys may contain ``/`` and dots):
       ``metrics.val/paper/greedy.CER``, ``logged.best/val/CER``, ``cost.params``.

    Raises KeyError naming the key, the closest available key and the available keys.
    """
    logged = results.get("logged") or {}
    metrics = results.get("metrics") or {}
    found: Any = _MISSING
    if _is_number(results.get(key)):
        found = results[key]
    elif f"best/{key}" in logged:
        found = logged[f"best/{key}"]
    elif key in logged:
        found = logged[key]
    elif isinstance(metrics.get(key), Mapping) and "CER" in metrics[key]:
        found = metrics[key]["CER"]
    else:
        head, _, rate = key.rpartition("/")
        if isinstance(metrics.get(head), Mapping) and rate in metrics[head]:
            found = metrics[head][rate]
        else:
            found = _dotted(results, key)
    if not _is_number(found):
        import difflib

        keys = available_keys(results)
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        shown = ", ".join(keys[:40]) + (f", ... ({len(keys)} in all)" if len(keys) > 40 else "")
        what = "is not a number in" if found is not _MISSING else "is not in"
        raise KeyError(f"{key!r} {what} the job result{hint} Available keys: {shown}")
    return float(found)


def available_keys(results: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths of the numeric values in a result (the job's ``config`` left out)."""
    keys = []
    for key, value in results.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if key != "config":
                keys += available_keys(value, path + ".")
        elif _is_number(value):
            keys.append(path)
    return keys


_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dotted(tree: Mapping[str, Any], path: str) -> Any:
    """``tree["a"]["b/c"]["d"]`` for ``"a.b/c.d"``; keys may themselves contain dots."""
    if path in tree:
        return tree[path]
    parts = path.split(".")
    for i in range(1, len(parts)):
        head = ".".join(parts[:i])
        if head in tree and isinstance(tree[head], Mapping):
            found = _dotted(tree[head], ".".join(parts[i:]))
            if found is not _MISSING:
                return found
    return _MISSING


def objective(results: Mapping[str, Any], key: str | Sequence[str] | None) -> Any:
    """What a Hydra job returns to a sweeper for ``optimized_metric`` (:func:`lookup`).

    None: the whole results mapping; a list: a tuple of values. A key that is not in the
    results gives NaN and a warning (the sweeper records a failed trial, the sweep goes on).
    """
    if key is None:
        return dict(results)
    if not isinstance(key, str):
        return tuple(objective(results, k) for k in key)
    try:
        return lookup(results, key)
    except KeyError as err:
        log.warning("optimized_metric: %s; returning NaN", err.args[0])
        return math.nan


def _plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        # Unresolvable interpolations (hydra:... outside a Hydra run) stay as their text.
        try:
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 - fall back to the unresolved form, still JSON-able
            return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]
    return dict(cfg)


def config_hash(cfg: DictConfig | Mapping[str, Any]) -> str:
    """A short, stable hash of what a run computes (paths, devices and loggers excluded)."""
    plain = {k: v for k, v in _plain(cfg).items() if k not in _HASH_EXCLUDED}
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit(repo_dir: str | Path | None = None) -> str | None:
    """HEAD of the checkout the code runs from (``+dirty`` when tracked files changed)."""
    repo = Path(repo_dir) if repo_dir else Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _json_safe(value: Any) -> Any:
    """NaN/Inf are not JSON; write them as null so any JSON reader can load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(run_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``run_dir/results.json`` atomically (temp file beside it, fsync, rename, fsync dir).

    A reader never sees a half-written file, even if the run is killed or the disk fills.
    """
    missing = [k for k in REQUIRED_KEYS if k not in results]
    if missing:
        raise ValueError(f"results are missing required keys {missing}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RESULTS_FILE
    text = json.dumps(_json_safe(results), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_text(path, text + "\n")
    return path


def find_results(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Every ``results.json`` under the given files/directories (recursive), and problems."""
    found: list[Path] = []
    problems: list[str] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            hits = sorted(p.rglob(RESULTS_FILE))
            if not hits:
                problems.append(f"{p}: no {RESULTS_FILE} found under this directory")
            found.extend(hits)
        else:
            problems.append(f"{p}: no such file or directory")
    return sorted(set(found)), problems


def read_results(path: str | Path, required: Sequence[str] = REQUIRED_KEYS) -> dict[str, Any]:
    """Load a ``results.json`` (or the one inside a run directory) and check its keys.

    The one reader of results files (the collector, the Pareto tool and the Optuna sweeper use
    it); ``required`` narrows the check for readers that need fewer keys.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULTS_FILE} at {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level is {type(data).__name__}, expected an object")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{path} lacks required keys {missing}")
    return data
