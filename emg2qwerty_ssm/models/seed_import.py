"""Import of the seed's Lightning checkpoints (the paper's released ``*.ckpt``,
docs/recipe.md#evaluation).

Their ``hyper_parameters`` hold omegaconf objects (``model_HF`` / ``model_LF`` configs,
``mlp_features``, ``norm``, ``input_mean_pooling``, ...) and their ``state_dict`` uses keys
``model.<i>.…`` (2 = MLP, 4 = HF front-end, 5 = LF S4 model, 6 = classifier) plus the aliases
``model_HF.…`` / ``model_LF.…``. :func:`seed_model_config` infers our ``model`` config node from
the hyper-parameters and :func:`map_seed_state_dict` renames the weights; anything that cannot
be mapped is refused with a message naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emg2qwerty_ssm.checkpointing import CheckpointError
from emg2qwerty_ssm.models.model import EMGModel, build_model
from emg2qwerty_ssm.models.weights import load_weights

__all__ = ["is_seed_checkpoint", "load_seed_model", "map_seed_state_dict", "seed_model_config"]


def is_seed_checkpoint(hp: Mapping[str, Any]) -> bool:
    """Plain ``hyper_parameters`` of a seed checkpoint (its two model halves are described)."""
    return "model_LF" in hp or "model_HF" in hp


def load_seed_model(
    hp: Mapping[str, Any], state: Mapping[str, torch.Tensor], path: Path
) -> EMGModel:
    """Build the model a seed checkpoint describes and load its renamed weights."""
    model = build_model(seed_model_config(hp, path))
    load_weights(model, map_seed_state_dict(state, path), path)
    return model


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
