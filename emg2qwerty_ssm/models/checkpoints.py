"""Load and save models: the project's own checkpoint format and the seed's Lightning format.

Own format (``save_model``): a ``torch.save`` of a plain dict

    {"format": "emg2qwerty_ssm.model/1", "model_config": <plain model node>,
     "state_dict": {name: tensor}, "metadata": {...plain values...}}

which loads with ``torch.load(weights_only=True)`` and no allow-list at all, and rebuilds the
architecture with :func:`build_model` from ``model_config``.

Lightning checkpoints are dispatched to their importers: this project's LightningModule
(``hyper_parameters`` hold our ``model`` node), the seed's (:mod:`.seed_import`) and
facebookresearch/emg2qwerty's TDS-Conv-CTC (:mod:`.emg2qwerty_import`).

Unpickling is restricted (``weights_only=True``) to tensors, plain containers and the omegaconf
classes seed checkpoints contain (:data:`SAFE_GLOBALS`). A file that needs anything else is
refused: unpickling arbitrary classes can run code from the file. Pass ``trust_pickle=True``
only for files you trust.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emg2qwerty_ssm.atomic_io import atomic_save
from emg2qwerty_ssm.checkpointing import (
    INTEGRITY_KEY,
    SAFE_GLOBALS,
    CheckpointError,
    add_integrity,
    safe_load,
    verify_state_dict,
)
from emg2qwerty_ssm.models import emg2qwerty_import, seed_import
from emg2qwerty_ssm.models.cost import trainable_params
from emg2qwerty_ssm.models.model import EMGModel, build_model
from emg2qwerty_ssm.models.seed_import import map_seed_state_dict, seed_model_config
from emg2qwerty_ssm.models.weights import load_weights as _load_weights
from emg2qwerty_ssm.models.weights import plain as _plain

__all__ = [
    "SAFE_GLOBALS",
    "CheckpointError",
    "load_model",
    "map_seed_state_dict",
    "save_model",
    "seed_model_config",
]

FORMAT = "emg2qwerty_ssm.model/1"


def _torch_load(path: Path, map_location: Any, trust_pickle: bool) -> Any:
    """Restricted unpickling (:func:`emg2qwerty_ssm.checkpointing.safe_load`)."""
    return safe_load(path, map_location=map_location, trust_pickle=trust_pickle)


def load_model(
    path: str | os.PathLike, map_location: Any = "cpu", trust_pickle: bool = False
) -> EMGModel:
    """Load an own-format or seed-format checkpoint into an :class:`EMGModel` in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = _torch_load(path, map_location, trust_pickle)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    state = ckpt.get("state_dict")
    if isinstance(state, Mapping):  # checksums (own files), finiteness (all), tensor named
        verify_state_dict(state, (ckpt.get(INTEGRITY_KEY) or {}).get("tensors"), path)
    if ckpt.get("format") == FORMAT:
        model = build_model(ckpt["model_config"])
        _load_weights(model, dict(ckpt["state_dict"]), path)
    elif isinstance(ckpt.get("format"), str):
        raise CheckpointError(f"{path}: unsupported checkpoint format {ckpt['format']!r}")
    elif "state_dict" in ckpt and "hyper_parameters" in ckpt:
        model = _load_lightning(ckpt, path)
    else:
        raise CheckpointError(
            f"{path}: not a recognised checkpoint (top-level keys {sorted(map(str, ckpt))}); "
            f"expected format={FORMAT!r} or a Lightning checkpoint with state_dict and "
            "hyper_parameters"
        )
    return model.eval()


def save_model(
    model: EMGModel, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model`` in the project's format (atomically) and return the path."""
    if model.config is None:
        raise ValueError("model has no config to save; build it with build_model(model_cfg)")
    meta = {
        "name": model.name,
        "params": trainable_params(model),
        "stride": model.stride,
        "input_rate_hz": model.input_rate_hz,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        **_plain(dict(metadata or {})),
    }
    payload = {
        "format": FORMAT,
        "model_config": _plain(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": meta,
    }
    add_integrity(payload)
    return atomic_save(lambda handle: torch.save(payload, handle), path)


# -- Lightning checkpoints ---------------------------------------------------------------------


def _load_lightning(ckpt: Mapping[str, Any], path: Path) -> EMGModel:
    if emg2qwerty_import.is_emg2qwerty_checkpoint(ckpt):  # before _plain: never resolve its hp
        return emg2qwerty_import.load_emg2qwerty_model(ckpt, path)
    hp = _plain(ckpt["hyper_parameters"])
    state = dict(ckpt["state_dict"])
    own_cfg = _own_model_config(hp)
    if own_cfg is not None:  # written by this project's LightningModule (self.model = EMGModel)
        model = build_model(own_cfg)
        # the LightningModule's other members (metrics, loss) hold no model weights
        weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        _load_weights(model, weights, path)
        return model
    if seed_import.is_seed_checkpoint(hp):
        return seed_import.load_seed_model(hp, state, path)
    raise CheckpointError(
        f"{path}: Lightning checkpoint without a model description in hyper_parameters "
        f"(keys {sorted(hp)}); expected the seed's model_HF/model_LF or a 'model' node"
    )


def _own_model_config(hp: Mapping[str, Any]) -> Mapping[str, Any] | None:
    candidates = [hp.get("model"), hp.get("model_cfg"), (hp.get("cfg") or {}).get("model")]
    for node in candidates:
        if isinstance(node, Mapping) and all(
            isinstance(node.get(s), Mapping) and "_target_" in node[s]
            for s in ("encoder", "frontend", "backbone")
        ):
            return node
    return None
