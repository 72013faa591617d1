"""Safe, verified checkpoint files: restricted unpickling, per-tensor checksums, clear errors.

Every checkpoint this project loads goes through :func:`safe_load`: ``torch.load`` with an
explicit ``weights_only=True`` (so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` cannot turn it off)
and :data:`SAFE_GLOBALS` as the only extra classes; a file that needs anything else is refused
with the blocked global named. A file that is no checkpoint at all (empty, text, JSON, a
truncated archive) is refused with what it is.

Checkpoints written by this project carry ``INTEGRITY_KEY``: a SHA-256 per state-dict tensor.
:func:`verify_state_dict` recomputes them and checks every float tensor is finite, naming the
tensor at fault, so flipped bytes or a diverged run's NaN weights never load silently.
"""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import re
import typing
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "INTEGRITY_KEY",
    "SAFE_GLOBALS",
    "CheckpointError",
    "add_integrity",
    "describe_file",
    "safe_load",
    "state_checksums",
    "verify_checkpoint",
    "verify_state_dict",
]

INTEGRITY_KEY = "emg2qwerty_ssm_integrity"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely, is corrupt, or does not fit the model."""


def _omegaconf_globals() -> list[Any]:
    from omegaconf import DictConfig, ListConfig, nodes
    from omegaconf.base import ContainerMetadata, Metadata

    names = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode")
    node_types = [getattr(nodes, n) for n in (*names, "PathNode") if hasattr(nodes, n)]
    return [DictConfig, ListConfig, ContainerMetadata, Metadata, *node_types]


#: what a seed checkpoint's pickle references besides tensors (checked on the fixture)
SAFE_GLOBALS: list[Any] = [
    *_omegaconf_globals(),
    typing.Any,  # omegaconf metadata's element/key types
    list,
    dict,
    int,
    collections.defaultdict,
    collections.OrderedDict,
]


def describe_file(path: Path) -> str:
    """What a file that failed to load as a checkpoint looks like (for the error message)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as err:
        return f"unreadable ({err.strerror})"
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError):
            return f"a truncated or damaged torch archive ({size} bytes; e.g. a disk ran full)"
        return f"a torch archive with a damaged member {bad}" if bad else "a torch archive"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (a session recording?), not a checkpoint"
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return f"{size} bytes of binary data that are not a torch checkpoint"
    try:
        json.loads(text)
        return "a JSON file (e.g. results.json?), not a checkpoint"
    except ValueError:
        return f"a text file ({size} bytes, starting {text[:40]!r}), not a checkpoint"


def safe_load(path: str | Path, map_location: Any = "cpu", trust_pickle: bool = False) -> Any:
    """``torch.load`` restricted to tensors, plain containers and :data:`SAFE_GLOBALS`.

    ``trust_pickle=True`` falls back to full unpickling for a file needing other classes.
    Raises :class:`CheckpointError` naming the blocked global, or saying what the file is.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(err))))
        if not found:
            raise CheckpointError(f"{path}: not a checkpoint: {describe_file(path)}") from None
        if trust_pickle:
            return torch.load(path, map_location=map_location, weights_only=False)
        raise CheckpointError(
            f"{path}: refused to unpickle (it needs {', '.join(found)}): only tensors, plain "
            "containers and omegaconf configs are allowed, because unpickling other objects can "
            "execute code stored in the file. If you trust this file, load it deliberately with "
            "load_model(path, trust_pickle=True) (scripts/convert_seed_checkpoint.py "
            "--trust-pickle), or convert it once to the project's format."
        ) from None
    except Exception as err:  # noqa: BLE001 - any failure of a non-checkpoint file: say what it is
        raise CheckpointError(
            f"{path}: cannot load: {describe_file(path)} ({type(err).__name__}: {err})"
        ) from None


def _digest(tensor: torch.Tensor) -> str:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def state_checksums(state: Mapping[str, Any]) -> dict[str, str]:
    """``{tensor name: sha256 of its bytes}`` for every tensor of a state dict."""
    return {k: _digest(v) for k, v in state.items() if torch.is_tensor(v)}


def add_integrity(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """Store the checksums of ``checkpoint["state_dict"]`` in the checkpoint (in place)."""
    state = checkpoint.get("state_dict")
    if isinstance(state, Mapping):
        checkpoint[INTEGRITY_KEY] = {"algorithm": "sha256", "tensors": state_checksums(state)}
    return checkpoint


def verify_state_dict(
    state: Mapping[str, Any], checksums: Mapping[str, str] | None, source: str | Path
) -> None:
    """Raise :class:`CheckpointError` naming the first corrupted or non-finite tensor."""
    for name, expected in (checksums or {}).items():
        value = state.get(name)
        if value is None:
            raise CheckpointError(f"{source}: tensor {name!r} has a checksum but is absent")
        if _digest(value) != expected:
            raise CheckpointError(
                f"{source}: tensor {name!r} is corrupted: its bytes do not match the checksum "
                "stored when the checkpoint was written"
            )
    for name, value in state.items():
        if torch.is_tensor(value) and (value.is_floating_point() or value.is_complex()):
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"{source}: tensor {name!r} holds {bad} non-finite value(s) (NaN/Inf) of "
                    f"{value.numel()}: the run that wrote it diverged; use an earlier checkpoint"
                )


def verify_checkpoint(checkpoint: Mapping[str, Any], source: str | Path) -> None:
    """:func:`verify_state_dict` on a loaded Lightning/own-format checkpoint dict."""
    state = checkpoint.get("state_dict")
    if isinstance(state, Mapping):
        integrity = checkpoint.get(INTEGRITY_KEY) or {}
        verify_state_dict(state, integrity.get("tensors"), source)
