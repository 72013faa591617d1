"""The composed model: encoder → front-end → back-end → classifier, built from a config node.

``model_cfg`` (the Hydra ``model`` node, see docs/models.md) has ``name``, ``input_kind``,
``input_rate_hz`` (set from the transforms in the full config; without it, the rate of
conf/transforms/<input_kind>.yaml) and three stage nodes ``encoder``, ``frontend`` and
``backbone``, each with a ``_target_``. :func:`build_model` instantiates them in order, passing
``in_features=<previous stage's out_features>`` to the front-end and the back-end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from emg2qwerty_ssm.charset import charset
from emg2qwerty_ssm.models.base import State, StreamingModule
from emg2qwerty_ssm.models.cost import BlockCost, linear_cost

STAGES = ("encoder", "frontend", "backbone")
INPUT_KINDS = ("raw", "log_spectrogram")
NUM_CLASSES = charset().num_classes  # the charset owns it: 98 keys + the CTC blank = 99


class EMGModel(nn.Module):
    """``(T, N, ...) -> (T', N, num_classes)`` log-probabilities, ``T' = emission_lengths(T)``.

    The stages are :class:`StreamingModule` s; everything rate-related (stride, emission
    lengths, streaming, cost) is derived from their ``stride`` / ``left_context`` / ``cost``.
    """

    def __init__(
        self,
        encoder: StreamingModule,
        frontend: StreamingModule,
        backbone: StreamingModule,
        num_classes: int = NUM_CLASSES,
        input_rate_hz: float = 2000.0,
        name: str = "model",
        input_kind: str = "raw",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.frontend, self.backbone = encoder, frontend, backbone
        self.classifier = nn.Linear(cast(int, backbone.out_features), num_classes)
        self.input_rate_hz, self.name, self.input_kind = float(input_rate_hz), name, input_kind
        self.config = dict(config) if config is not None else None  # for save_model

    def stages(self) -> Iterator[tuple[str, StreamingModule]]:
        for name in STAGES:
            yield name, getattr(self, name)

    # -- rates -------------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        """Input samples per output frame (64 for S4_large, 96 for the TC models)."""
        stride = 1
        for _, stage in self.stages():
            stride *= stage.stride
        return stride

    @property
    def left_context(self) -> int | None:
        """Input samples before an output block that influence it (None: recurrent state)."""
        context, scale = 0, 1
        for _, stage in self.stages():
            if stage.left_context is None:
                return None
            context += stage.left_context * scale
            scale *= stage.stride
        return context

    def emission_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per item: per stage ``L -> (L - left_context) // stride``.

        With kernel = stride stages this is ``input_lengths // self.stride``
        (docs/recipe.md#emission-lengths-and-loss).
        """
        lengths = torch.as_tensor(input_lengths).long()
        for _, stage in self.stages():
            context = stage.left_context or 0
            lengths = torch.div(lengths - context, stage.stride, rounding_mode="floor")
            lengths = lengths.clamp(min=0)
        return lengths

    # -- offline and streaming ---------------------------------------------------------------
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        for _, stage in self.stages():
            x = stage(x)
            if x.shape[0] == 0:  # shorter than one output frame
                return x.new_zeros(0, inputs.shape[1], self.classifier.out_features)
        return F.log_softmax(self.classifier(x), dim=-1)

    #: "fused": stream through the NumPy engine of models/fused.py where the model qualifies
    #: (eval mode, CPU, float32, the paper's stage types); "torch": stage by stage
    stream_engine: str = "fused"

    def _use_fused(self, device: torch.device | str | None) -> bool:
        from emg2qwerty_ssm.models import fused, s4d_reference

        if self.stream_engine != "fused" or self.training or s4d_reference.is_active():
            return False
        if device is not None and torch.device(device).type != "cpu":
            return False
        return fused.supports(self)

    def _fused_plan(self) -> Any:
        """The fused engine's plan for the current parameter version (rebuilt on change)."""
        from emg2qwerty_ssm.models import fused

        plan = self.__dict__.get("_fused")
        if plan is None or plan.key != fused.plan_key(plan.tensors):
            plan = fused.FusedPlan(self)
            self.__dict__["_fused"] = plan
        return plan

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """Zero state; the fused engine's state in eval mode where it applies (docs/speed.md)."""
        if self._use_fused(device):
            return self._fused_plan().initial_state(batch_size)
        return [stage.initial_state(batch_size, device) for _, stage in self.stages()]

    def forward_stream(self, chunk: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Consume ``chunk (t, N, ...)`` of any length; return the new frames ``(t', N, K)``.

        Concatenating the outputs of consecutive chunks equals :meth:`forward` on the
        concatenated input (eval mode). Stages after one that yields no frame are not called,
        so no stage ever sees an empty chunk. A state from the fused engine (eval mode) runs
        the whole step in NumPy (emg2qwerty_ssm.models.fused, same maths within 1e-5).
        """
        from emg2qwerty_ssm.models.fused import FusedState

        if isinstance(state, FusedState):
            if self.training:
                raise ValueError(
                    "this streaming state comes from the fused eval-mode engine; call "
                    "model.eval() or start again from model.initial_state() in training mode"
                )
            branch = dataclasses.replace(state, ssm=list(state.ssm), pooled=list(state.pooled))
            data = chunk.detach().cpu().numpy().astype("float32", copy=False)
            return torch.from_numpy(self._fused_plan().step(data, branch)), branch
        x, new_state = chunk, list(state)
        for i, (_, stage) in enumerate(self.stages()):
            x, new_state[i] = stage.forward_stream(x, state[i])
            if x.shape[0] == 0:
                batch = chunk.shape[1]
                empty = x.new_zeros(0, batch, self.classifier.out_features)
                return empty, new_state
        return F.log_softmax(self.classifier(x), dim=-1), new_state

    # -- training helpers --------------------------------------------------------------------
    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups (docs/recipe.md#optimizer): one group at ``base_lr`` for parameters
        without a hint and one group per distinct ``_optim`` hint (S4D's ``log_dt``, ``log_A_real``,
        ``A_imag``: lr 5e-4, weight_decay 0)."""
        hints: dict[int, dict[str, float]] = {}
        for module in self.modules():
            optim_hints = getattr(module, "optim_hints", None)
            if callable(optim_hints):
                for pname, hint in optim_hints().items():
                    hints[id(getattr(module, pname))] = hint
        default: list[nn.Parameter] = []
        hinted: dict[tuple, list[nn.Parameter]] = {}
        for p in self.parameters():
            if not p.requires_grad:
                continue
            hint = hints.get(id(p), getattr(p, "_optim", None))
            if hint is None:
                default.append(p)
            else:
                hinted.setdefault(tuple(sorted(hint.items())), []).append(p)
        groups: list[dict[str, Any]] = [{"params": default, "lr": base_lr, "name": "default"}]
        for key, params in hinted.items():
            groups.append({"params": params, "lr": base_lr, **dict(key), "name": _group_name(key)})
        return groups

    def cost(self, input_rate_hz: float | None = None) -> list[BlockCost]:
        """Per-layer streaming cost (docs/models.md#cost-convention) with stage-prefixed names."""
        rate = self.input_rate_hz if input_rate_hz is None else float(input_rate_hz)
        costs: list[BlockCost] = []
        for name, stage in self.stages():
            costs += [dataclasses.replace(c, name=f"{name}.{c.name}") for c in stage.cost(rate)]
            rate /= stage.stride
        return [*costs, linear_cost("classifier", self.classifier, rate)]


def _group_name(hint: tuple) -> str:
    return "hinted:" + ",".join(f"{k}={v:g}" for k, v in hint)


def _plain(cfg: Any) -> dict[str, Any]:
    """A resolved plain dict from a DictConfig or mapping."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if isinstance(cfg, Mapping):
        return OmegaConf.to_container(OmegaConf.create(dict(cfg)), resolve=True)  # type: ignore[return-value]
    raise TypeError(f"model config must be a mapping, got {type(cfg).__name__}")


def transforms_rate_hz(input_kind: str, config_dir: Path | None = None) -> float:
    """``output_rate_hz`` of ``conf/transforms/<input_kind>.yaml``: the rate of a model whose
    config carries no ``input_rate_hz``.

    The rate belongs to the transforms: the full config sets ``model.input_rate_hz:
    ${transforms.output_rate_hz}`` (conf/config.yaml). A ``model`` group composed alone
    (``compose_model_config``, ``compose(overrides=["+model=..."])``) has no transforms, so
    its rate is that of the transforms its ``input_kind`` names, read from the same file.
    """
    from omegaconf import DictConfig, OmegaConf

    from emg2qwerty_ssm import CONFIG_DIR

    path = Path(config_dir or CONFIG_DIR) / "transforms" / f"{input_kind}.yaml"
    if not path.is_file():
        raise ValueError(
            f"model.input_rate_hz is not set and there is no {path} to take it from "
            f"(input_kind={input_kind!r}); set model.input_rate_hz"
        )
    node = OmegaConf.load(path)
    if not isinstance(node, DictConfig):
        raise ValueError(f"{path}: expected a mapping with kind and output_rate_hz")
    kind, rate = node.get("kind"), node.get("output_rate_hz")
    if kind != input_kind:
        raise ValueError(f"{path}: kind is {kind!r}, expected {input_kind!r}")
    return _positive_rate(rate, f"{path}: output_rate_hz")


def _positive_rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{where} must be a positive number of Hz, got {value!r}")
    return float(value)


def build_model(model_cfg: Any) -> EMGModel:
    """Instantiate encoder, front-end and back-end from ``model_cfg`` and add the classifier.

    Raises ``ValueError`` naming the offending field for missing stages, a bad ``input_kind``
    or ``input_rate_hz``, or a stage that cannot be instantiated (e.g. a key the chosen class
    does not accept).
    """
    from hydra.utils import instantiate

    cfg = _plain(model_cfg)
    name = cfg.get("name", "model")
    missing = [s for s in STAGES if not isinstance(cfg.get(s), Mapping) or "_target_" not in cfg[s]]
    if missing:
        raise ValueError(
            f"model config {name!r}: stage(s) {missing} missing or without _target_ "
            f"(model.encoder / model.frontend / model.backbone each need one)"
        )
    input_kind = cfg.get("input_kind", "raw")
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"model.input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    if cfg.get("input_rate_hz") is None:
        rate = transforms_rate_hz(input_kind)
    else:
        rate = _positive_rate(cfg["input_rate_hz"], f"model {name!r}: model.input_rate_hz")
    stages: dict[str, StreamingModule] = {}
    in_features: int | None = None
    for stage_name in STAGES:
        node = dict(cfg[stage_name])
        if in_features is not None:
            node["in_features"] = in_features
        try:
            stage = instantiate(node, _convert_="all")
        except Exception as err:  # Hydra wraps the constructor's error; keep it readable
            hint = ""
            if "unexpected keyword argument" in str(err):
                hint = (
                    f" (a key set for another {stage_name}? remove it with "
                    f"~model.{stage_name}.<key>, see docs/models.md)"
                )
            raise ValueError(
                f"model {name!r}: cannot build model.{stage_name} ({node['_target_']}): {err}{hint}"
            ) from err
        if not isinstance(stage, StreamingModule) or not hasattr(stage, "out_features"):
            raise ValueError(
                f"model.{stage_name}._target_ {node['_target_']} must build a StreamingModule "
                "with in_features/out_features"
            )
        stages[stage_name] = stage
        in_features = cast(int, stage.out_features)
    return EMGModel(
        **stages,
        num_classes=int(cfg.get("num_classes", NUM_CLASSES)),
        input_rate_hz=rate,
        name=name,
        input_kind=input_kind,
        config={**cfg, "input_rate_hz": rate},  # saved checkpoints carry the resolved rate
    )
