"""Shared by every export target: loading the model, synthetic sessions, the parts table.

Kept free of ONNX and C specifics so that each target (``onnx_target``, ``c_target``) and the
command line (``__main__``) can use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.export.mcu.targets import PARTS  # the microcontrollers we check against
from emg2qwerty_ssm.models import EMGModel

TARGETS = ("onnx", "c", "cortex-m4", "cortex-m7")
PRECISIONS = ("fp32", "int8")


class ExportError(ValueError):
    """Bad export input (missing checkpoint, unknown target, ...), with how to fix it."""


def load_export_model(
    checkpoint: str | os.PathLike | None = None,
    model: str | None = None,
    seed: int = 0,
    trust_pickle: bool = False,
) -> EMGModel:
    """The model to export, in eval mode: a checkpoint, or ``conf/model/<model>.yaml`` at random.

    Exactly one of ``checkpoint`` (anything ``emg2qwerty_ssm.load_model`` accepts, the
    authors' Lightning format included) and ``model`` (a config name, random weights seeded by
    ``seed``: for trying the pipeline) must be given.
    """
    if (checkpoint is None) == (model is None):
        raise ExportError(
            "give exactly one of checkpoint=PATH (a trained model) or model=NAME "
            "(random weights, e.g. model=tc_s4_small)"
        )
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ExportError(
                f"checkpoint={checkpoint}: no such file; pass the path of a .ckpt/.pt written "
                "by training (or the authors' release), or model=NAME for random weights"
            )
        from emg2qwerty_ssm import load_model

        loaded = load_model(path, trust_pickle=trust_pickle)
        if not isinstance(loaded, EMGModel):
            raise ExportError(f"checkpoint={checkpoint} did not load as an EMGModel")
        return loaded.eval()
    from emg2qwerty_ssm import CONFIG_DIR
    from emg2qwerty_ssm.models import build_model
    from emg2qwerty_ssm.models.summary import compose_model_config

    if not (CONFIG_DIR / "model" / f"{model}.yaml").is_file():
        names = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
        raise ExportError(f"model={model}: no conf/model/{model}.yaml; choose one of {names}")
    torch.manual_seed(seed)
    return build_model(compose_model_config([f"model={model}"])).eval()


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- synthetic data --------------------------------------------------------------------------
@dataclass(frozen=True)
class Session:
    """One session's raw EMG ``(T, bands, electrodes)`` float32 and its typed text."""

    name: str
    emg: torch.Tensor
    text: str


def synthetic_split(
    preset: str = "tiny", seed: int = 0, user: str = "user0", split: str = "test"
) -> list[Path]:
    """Session files of ``split`` (train/val/test) of a synthetic dataset (generated if absent)."""
    from omegaconf import DictConfig, OmegaConf

    from emg2qwerty_ssm.synthetic import ensure_dataset

    root = ensure_dataset(preset, seed)
    split_file = root / "splits" / f"{user}.yaml"
    if not split_file.is_file():
        names = sorted(p.stem for p in (root / "splits").glob("*.yaml"))
        raise ExportError(f"synthetic {preset}: no split {user!r}; choose one of {names}")
    node = OmegaConf.load(split_file)
    if not isinstance(node, DictConfig) or not isinstance(node.get("dataset"), DictConfig):
        raise ExportError(f"{split_file}: expected a mapping with a 'dataset' node")
    entries = node.dataset.get(split) or []
    return [root / f"{entry['session']}.hdf5" for entry in entries]


def load_session(path: Path) -> Session:
    """Read a whole session file as raw EMG ``(T, 2, 16)`` and its ground-truth text."""
    from emg2qwerty_ssm.data import EMGSessionData
    from emg2qwerty_ssm.transforms import ToTensor

    with EMGSessionData(path) as session:
        emg = ToTensor()(session[:]).float()
        text = str(session.ground_truth())
    return Session(path.stem, emg.contiguous(), text)


def session_emg(seconds: float = 3.0, preset: str = "tiny", seed: int = 0) -> torch.Tensor:
    """The first ``seconds`` of the first synthetic test session: ``(T, 2, 16)`` float32."""
    session = load_session(synthetic_split(preset, seed, split="test")[0])
    return session.emg[: int(seconds * 2000)].clone()


def calibration_emg(
    seconds: float = 20.0, preset: str = "tiny", seed: int = 0, user: str = "user0"
) -> torch.Tensor:
    """Training-split EMG for int8 calibration: ``(T, 2, 16)``, up to ``seconds`` in all.

    Taken from the start of each training session in turn (sessions concatenated), so the
    activations and recurrent states seen are those of ordinary streaming.
    """
    chunks, left = [], int(seconds * 2000)
    for path in synthetic_split(preset, seed, user, "train"):
        emg = load_session(path).emg[:left]
        chunks.append(emg)
        left -= emg.shape[0]
        if left <= 0:
            break
    return torch.cat(chunks)


# -- reports ---------------------------------------------------------------------------------
def fits(flash_bytes: int | None, ram_bytes: int | None) -> dict[str, bool | None]:
    """``{part: flash and RAM both fit}``; None when a footprint was not measured."""
    if flash_bytes is None or ram_bytes is None:
        return {part.name: None for part in PARTS}
    return {
        part.name: flash_bytes <= part.flash_bytes and ram_bytes <= part.ram_bytes for part in PARTS
    }


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temp file, fsync, rename)."""
    atomic_write_text(path, json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
