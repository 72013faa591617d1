"""Loading weights into a built model and plain copies of checkpoint configs (shared by the
own-format, seed-format and emg2qwerty-format loaders)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emg2qwerty_ssm.checkpointing import CheckpointError

if TYPE_CHECKING:
    from emg2qwerty_ssm.models.model import EMGModel


def plain(obj: Any) -> Any:
    """Plain containers so that weights_only loading accepts them.

    Interpolations in omegaconf objects are *never resolved*: a checkpoint is untrusted input,
    and resolving ``${oc.env:SECRET}`` would copy an environment secret into the output. Their
    text is kept as it is (``"${oc.env:SECRET}"``).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, str):  # e.g. torch's TorchVersion, a str subclass pickled by class
        return str(obj)
    return obj


def load_weights(model: EMGModel, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing:
        raise CheckpointError(
            f"{path}: weights do not match the architecture: unknown keys {unknown[:10]}"
            f"{' ...' if len(unknown) > 10 else ''}, missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}"
        )
    bad = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch: " + "; ".join(bad[:10]))
    model.load_state_dict(state, strict=True)
