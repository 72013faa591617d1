"""Import facebookresearch/emg2qwerty's own checkpoints (its TDS-Conv-CTC baseline).

emg2qwerty releases ``models/generic.ckpt`` and ``models/personalized-finetuned/userN.ckpt``
as Lightning checkpoints of its ``TDSConvCTCModule``. Their ``state_dict`` holds one
``nn.Sequential`` under ``model.``:

====================  ==================================  ==========================
emg2qwerty key        module                              our key
====================  ==================================  ==========================
``model.0.``          SpectrogramNorm                     ``encoder.spec_norm.``
``model.1.``          MultiBandRotationInvariantMLP       ``encoder.mlp.``
``model.2``           Flatten (no weights)                —
``model.3.``          TDSConvEncoder                      ``backbone.``
``model.4.``          Linear (classifier)                 ``classifier.``
``model.5``           LogSoftmax (no weights)             —
====================  ==================================  ==========================

and ``hyper_parameters`` holds ``in_features`` (electrode channels x frequency bins, 528),
``mlp_features``, ``block_channels``, ``kernel_width`` and omegaconf ``optimizer``,
``lr_scheduler`` and ``decoder`` nodes. Only the four architecture values are read; the
omegaconf nodes are never resolved (they can hold interpolations such as
``${trainer.max_epochs}`` that only resolve inside emg2qwerty's own Hydra config).

Our ``tds_conv_ctc`` model (:mod:`emg2qwerty_ssm.models.tds`) names its submodules after
emg2qwerty's, so the weights map by prefix only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emg2qwerty_ssm.checkpointing import CheckpointError
from emg2qwerty_ssm.models.model import EMGModel, build_model
from emg2qwerty_ssm.models.weights import load_weights

#: the architecture values a TDSConvCTCModule checkpoint must carry
ARCH_KEYS = ("in_features", "mlp_features", "block_channels", "kernel_width")
ELECTRODE_CHANNELS = 16  # per band; emg2qwerty's in_features = 16 * frequency bins
NUM_BANDS = 2
#: emg2qwerty prefix -> our prefix (model.2 Flatten and model.5 LogSoftmax carry no weights)
PREFIXES = {
    "model.0.": "encoder.spec_norm.",
    "model.1.": "encoder.mlp.",
    "model.3.": "backbone.",
    "model.4.": "classifier.",
}


class Emg2qwertyCheckpointError(CheckpointError):
    """An emg2qwerty checkpoint that cannot be mapped onto ``tds_conv_ctc``."""


def is_emg2qwerty_checkpoint(ckpt: Mapping[str, Any]) -> bool:
    """True for a Lightning checkpoint of emg2qwerty's ``TDSConvCTCModule``."""
    hp = ckpt.get("hyper_parameters")
    state = ckpt.get("state_dict")
    if not isinstance(hp, Mapping) or not isinstance(state, Mapping):
        return False
    return all(k in hp for k in ARCH_KEYS) and any(str(k).startswith("model.3.") for k in state)


def _plain_value(value: Any, key: str, path: Path) -> Any:
    """A plain int/list from a hyper-parameter, refusing interpolations (never resolved)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=False)
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int):
            raise Emg2qwertyCheckpointError(
                f"{path}: hyper_parameters.{key}={value!r}: expected integer(s); "
                "interpolations are not resolved when importing a checkpoint"
            )
    return value


def emg2qwerty_model_config(hp: Mapping[str, Any], path: Path = Path("<ckpt>")) -> dict[str, Any]:
    """Our ``model`` config node (``tds_conv_ctc``) for a TDSConvCTCModule's hyper-parameters."""
    missing = [k for k in ARCH_KEYS if k not in hp]
    if missing:
        raise Emg2qwertyCheckpointError(f"{path}: hyper_parameters lack {missing}")
    in_features = int(_plain_value(hp["in_features"], "in_features", path))
    mlp_features = [int(v) for v in _plain_value(hp["mlp_features"], "mlp_features", path)]
    block_channels = [int(v) for v in _plain_value(hp["block_channels"], "block_channels", path)]
    kernel_width = int(_plain_value(hp["kernel_width"], "kernel_width", path))
    if in_features % ELECTRODE_CHANNELS:
        raise Emg2qwertyCheckpointError(
            f"{path}: hyper_parameters.in_features={in_features} is not "
            f"{ELECTRODE_CHANNELS} electrode channels x frequency bins"
        )
    if not mlp_features or not block_channels:
        raise Emg2qwertyCheckpointError(
            f"{path}: empty mlp_features={mlp_features} or block_channels={block_channels}"
        )
    return {
        "name": path.stem,
        "input_rate_hz": 125,
        "input_kind": "log_spectrogram",
        "encoder": {
            "_target_": "emg2qwerty_ssm.models.tds.SpectrogramMLPEncoder",
            "num_bands": NUM_BANDS,
            "electrode_channels": ELECTRODE_CHANNELS,
            "freq_bins": in_features // ELECTRODE_CHANNELS,
            "mlp_features": mlp_features,
            "pooling": "mean",  # emg2qwerty's TDSConvCTCModule defaults
            "offsets": [-1, 0, 1],
        },
        "frontend": {"_target_": "emg2qwerty_ssm.models.frontends.IdentityFrontend"},
        "backbone": {
            "_target_": "emg2qwerty_ssm.models.tds.TDSConvBackbone",
            "block_channels": block_channels,
            "kernel_width": kernel_width,
        },
    }


def map_emg2qwerty_state_dict(
    state: Mapping[str, torch.Tensor], path: Path = Path("<ckpt>")
) -> dict[str, torch.Tensor]:
    """Rename ``model.<i>.…`` keys to :class:`EMGModel` keys; unknown keys are refused."""
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            mapped[PREFIXES[prefix] + key[len(prefix) :]] = value
    if unknown:
        raise Emg2qwertyCheckpointError(
            f"{path}: {len(unknown)} state-dict key(s) with no mapping onto tds_conv_ctc: "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
        )
    return mapped


def load_emg2qwerty_model(ckpt: Mapping[str, Any], path: Path) -> EMGModel:
    """Build ``tds_conv_ctc`` from an already safely unpickled TDSConvCTCModule checkpoint."""
    model = build_model(emg2qwerty_model_config(ckpt["hyper_parameters"], path))
    load_weights(model, map_emg2qwerty_state_dict(ckpt["state_dict"], path), path)
    return model
