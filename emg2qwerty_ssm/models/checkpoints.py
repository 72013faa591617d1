"""Load and save models: the project's own checkpoint format and the seed's Lightning format.

Own format (``save_model``): a ``torch.save`` of a plain dict

    {"format": "emg2qwerty_ssm.model/1", "model_config": <plain model node>,
     "state_dict": {name: tensor}, "metadata": {...plain values...}}

which loads with ``torch.load(weights_only=True)`` and no allow-list at all, and rebuilds the
architecture with :func:`build_model` from ``model_config``.

Seed format (the paper's released ``*.ckpt``, docs/recipe.md#evaluation): a Lightning checkpoint
whose ``hyper_parameters`` hold omegaconf objects (``model_HF`` / ``model_LF`` configs,
``mlp_features``, ``norm``, ``input_mean_pooling``, ...) and whose ``state_dict`` uses keys
``model.<i>.…`` (2 = MLP, 4 = HF front-end, 5 = LF S4 model, 6 = classifier) plus the aliases
``model_HF.…`` / ``model_LF.…``. The architecture is inferred from the hyper-parameters and the
weights renamed; anything that cannot be mapped is refused with a message.

Unpickling is restricted (``weights_only=True``) to tensors, plain containers and the omegaconf
classes seed checkpoints contain (:data:`SAFE_GLOBALS`). A file that needs anything else is
refused: unpickling arbitrary classes can run code from the file. Pass ``trust_pickle=True``
only for files you trust.
"""

from __future__ import annotations

import datetime
import os
import re
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
from emg2qwerty_ssm.models.model import EMGModel, build_model

__all__ = ["SAFE_GLOBALS", "CheckpointError", "load_model", "save_model"]

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
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
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


def _plain(obj: Any) -> Any:
    """Plain containers so that weights_only loading accepts them.

    Interpolations in omegaconf objects are *never resolved*: a checkpoint is untrusted input,
    and resolving ``${oc.env:SECRET}`` would copy an environment secret into the output. Their
    text is kept as it is (``"${oc.env:SECRET}"``).
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, str):  # e.g. torch's TorchVersion, a str subclass pickled by class
        return str(obj)
    return obj


def _load_weights(model: EMGModel, state: dict[str, torch.Tensor], path: Path) -> None:
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


# -- Lightning checkpoints ---------------------------------------------------------------------


def _load_lightning(ckpt: Mapping[str, Any], path: Path) -> EMGModel:
    from emg2qwerty_ssm.models import emg2qwerty_import  # imports this module: import lazily

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
    if "model_LF" in hp or "model_HF" in hp:
        model = build_model(seed_model_config(hp, path))
        _load_weights(model, map_seed_state_dict(state, path), path)
        return model
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


def _cls_name(node: Any) -> str:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(node, Mapping) else ""


def _require(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise CheckpointError(f"{path}: unsupported seed checkpoint: {what}")


def seed_model_config(hp: Mapping[str, Any], path: Path = Path("<seed>")) -> dict[str, Any]:
    """Our ``model`` config node for a seed checkpoint's ``hyper_parameters``
    (docs/models.md#the-papers-models)."""
    _require(
        hp.get("in_transform", "raw_signal") == "raw_signal",
        path,
        f"in_transform={hp.get('in_transform')!r} (only raw_signal models are supported)",
    )
    _require(hp.get("loss", "ctc_loss") == "ctc_loss", path, f"loss={hp.get('loss')!r}")
    act = str(hp.get("non_linearity", "sparse_relu_10"))
    _require(act == "relu" or act.startswith("sparse_relu"), path, f"non_linearity={act!r}")
    encoder = {
        "_target_": "emg2qwerty_ssm.models.encoder.RotationInvariantEncoder",
        "bands": 2,
        "electrodes": 16,
        "in_features": int(hp.get("in_features", 16)),
        "mlp_features": list(hp["mlp_features"]),
        "norm": hp.get("norm", "batchnorm"),
        "activation": act,
        "offsets": list(hp.get("offsets", [0])),
        "pooling": hp.get("pooling", "mean"),
        "input_mean_pooling": int(hp.get("input_mean_pooling", 1)),
    }
    hf = hp.get("model_HF")
    hf_name = _cls_name(hf)
    if hf is None or hf_name.endswith("Identity") or hf_name == "identity":
        frontend: dict[str, Any] = {"_target_": "emg2qwerty_ssm.models.frontends.IdentityFrontend"}
    elif hf_name == "TemporalConvolution":
        _require(int(hf.get("padding", 0)) == 0, path, f"model_HF.padding={hf.get('padding')}")
        d_in = int(hf.get("d_input", -1))
        enc_out = 2 * encoder["mlp_features"][-1]
        _require(d_in in (-1, enc_out), path, f"model_HF.d_input={d_in} != MLP output {enc_out}")
        frontend = {
            "_target_": "emg2qwerty_ssm.models.frontends.TemporalConvFrontend",
            "out_channels": list(hf["out_channels"]),
            "strides": list(hf["strides"]),
            "kernel_sizes": list(hf.get("kernel_sizes", hf["strides"])),
            "norm": hf.get("norm", "batchnorm"),
            "activation": hf.get("activation", "gelu"),
        }
    else:
        raise CheckpointError(
            f"{path}: unsupported front-end model_HF._target_={hf.get('_target_')!r}; "
            "only TemporalConvolution and identity seed front-ends can be imported"
        )
    lf = hp.get("model_LF")
    _require(_cls_name(lf) == "S4Model", path, f"model_LF._target_={_target(lf)!r}")
    assert isinstance(lf, Mapping)  # _cls_name is "" for anything else
    _require(lf.get("S4_model", "S4D") == "S4D", path, f"model_LF.S4_model={lf.get('S4_model')}")
    _require(not lf.get("prenorm", False), path, "model_LF.prenorm=True")
    for key, ok in (("activation", "gelu"), ("decoder_non_linearity", "gelu")):
        _require(lf.get(key, ok) == ok, path, f"model_LF.{key}={lf.get(key)!r}")
    for key in ("reduce_time_dimension", "delta_pre_activation", "delta_post_activation"):
        _require(not lf.get(key, False), path, f"model_LF.{key}={lf.get(key)!r}")
    _require(int(lf.get("upscale_last_layer", 1)) == 1, path, "model_LF.upscale_last_layer != 1")
    _require(
        all(int(p) <= 1 for p in lf.get("mid_layer_pools", [0])),
        path,
        f"model_LF.mid_layer_pools={lf.get('mid_layer_pools')}",
    )
    pools = [max(int(p), 1) for p in lf.get("end_layer_pools", [0])]
    _require(
        all(p == 1 for p in pools) or lf.get("end_layer_pool_mode") == "mean",
        path,
        f"model_LF.end_layer_pool_mode={lf.get('end_layer_pool_mode')!r} with pools {pools}",
    )
    d_output = int(lf.get("d_output", -1))
    lr = lf.get("lr")
    backbone = {
        "_target_": "emg2qwerty_ssm.models.backbones.S4DBackbone",
        "d_model": int(lf["d_model"]),
        "n_layers": int(lf["n_layers"]),
        "d_state": int(lf.get("d_latent_space", 32)),
        "d_output": None if d_output == -1 else d_output,
        "dropout": float(lf.get("dropout_outer", 0.0)),
        "dropout_inner": float(lf.get("dropout_inner", 0.0)),
        "dt_min": float(lf.get("dt_min", 0.001)),
        "dt_max": float(lf.get("dt_max", 0.1)),
        "ssm_lr": None if lr is None else min(0.001, float(lr)),  # the seed's S4D hint rule
        "end_pools": pools if pools != [1] else None,
    }
    return {
        "name": path.stem,
        "input_rate_hz": 2000,
        "input_kind": "raw",
        "encoder": encoder,
        "frontend": frontend,
        "backbone": backbone,
    }


def _target(node: Any) -> Any:
    return node.get("_target_") if isinstance(node, Mapping) else node


#: (seed key regex, our key template); applied to keys under model.<i>.
_SEED_RULES: list[tuple[str, str]] = [
    (r"model\.2\.mlps\.(\d+)\.linear_layers\.(\d+)\.(\w+)", r"encoder.mlps.\1.linear_layers.\2.\3"),
    (r"model\.2\.mlps\.(\d+)\.norms\.(\d+)\.(\w+)", r"encoder.mlps.\1.norms.\2.norm.\3"),
    (r"model\.4\.layers\.(\d+)\.(\w+)", r"frontend.layers.\1.\2"),
    (r"model\.5\.(encoder|decoder)\.(\w+)", r"backbone.\1.\2"),
    (
        r"model\.5\.s4_layers\.(\d+)\.kernel\.(C|log_dt|log_A_real|A_imag)",
        r"backbone.s4_layers.\1.\2",
    ),  # noqa: E501
    (r"model\.5\.s4_layers\.(\d+)\.D", r"backbone.s4_layers.\1.D"),
    (r"model\.5\.s4_layers\.(\d+)\.output_linear\.0\.(\w+)", r"backbone.s4_layers.\1.out_conv.\2"),
    (r"model\.5\.norms\.(\d+)\.(\w+)", r"backbone.norms.\1.\2"),
    (r"model\.6\.(weight|bias)", r"classifier.\1"),
]
_ALIASES = {"model_HF.": "model.4.", "model_LF.": "model.5."}


def map_seed_state_dict(
    state: Mapping[str, torch.Tensor], path: Path = Path("<seed>")
) -> dict[str, torch.Tensor]:
    """Rename a seed state dict to :class:`EMGModel` keys (aliases checked, then dropped)."""
    mapped: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        alias = next((a for a in _ALIASES if key.startswith(a)), None)
        if alias is not None:
            original = _ALIASES[alias] + key[len(alias) :]
            if original not in state or not torch.equal(state[original], value):
                raise CheckpointError(
                    f"{path}: alias {key} does not equal {original}; the checkpoint is "
                    "inconsistent (the seed stores the same tensors under both names)"
                )
            continue
        for pattern, template in _SEED_RULES:
            if re.fullmatch(pattern, key):
                mapped[re.sub(pattern, template, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{path}: {len(unknown)} state-dict key(s) with no mapping onto the model: "
            f"{unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
        )
    return mapped
