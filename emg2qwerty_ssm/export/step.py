"""The model's streaming step as a pure function with real-valued, fixed-shape state.

:class:`ExportableStep` wraps a trained :class:`~emg2qwerty_ssm.models.EMGModel` as

    forward(window (stride, bands, electrodes), *state) -> (log_probs (K,), *new_state)

where ``stride = model.stride`` raw samples make exactly one output frame (96 for the TC and
GRU/EGRU models, 64 for S4_large), ``K`` is the number of classes (99) and ``state`` is a flat
tuple of float32 tensors with fixed shapes and names (:attr:`ExportableStep.state_specs`). No
complex numbers, no data-dependent shapes and no Python state: the graph exports to ONNX and
maps one to one onto the C library (docs/export.md, "step contract").

Why fixed-size state works: every stage's stride divides ``model.stride``, so one window holds
whole encoder pools, whole temporal-conv blocks, whole GRU blocks and whole S4D end pools; the
only thing carried from one window to the next is recurrent state (GRU/EGRU hidden state and
the S4D modes). The complex S4D state ``z (H, modes)`` is kept as two real tensors
``re, im`` and advanced per frame by ``z' = Ā z + B̄ u`` written in real arithmetic;
``y = 2 Re(C z') + D u``. The discretised constants are computed once, at construction, in
float64 (``S4D.tables()``, as the offline model's own tables) and rounded once to the step's
dtype, so later changes to the model's parameters are not seen.

``dtype``: the step computes in float32 (the deployed artefact) or float64. The float64 step
is the exactness check of the export itself: without float32 rounding it equals the float64
offline model to ~1e-12, so any larger difference is a wrong graph, not rounding
(docs/export.md, "Parity").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from emg2qwerty_ssm.models import EMGModel
from emg2qwerty_ssm.models.backbones import S4DBackbone
from emg2qwerty_ssm.models.encoder import RotationInvariantEncoder
from emg2qwerty_ssm.models.frontends import IdentityFrontend, TemporalConvFrontend
from emg2qwerty_ssm.models.recurrent import EGRUFrontend, GRUFrontend
from emg2qwerty_ssm.models.s4d import S4D

SUPPORTED = {
    "encoder": (RotationInvariantEncoder,),
    "frontend": (IdentityFrontend, TemporalConvFrontend, GRUFrontend, EGRUFrontend),
    "backbone": (S4DBackbone,),
}


class UnsupportedBlockError(TypeError):
    """A model stage the exporter cannot turn into a fixed-shape real-arithmetic step."""


def supported_blocks() -> str:
    """``"encoder: A; frontend: B, C; ..."`` for error messages and docs."""
    return "; ".join(f"{s}: {', '.join(c.__name__ for c in cs)}" for s, cs in SUPPORTED.items())


def check_exportable(model: EMGModel) -> None:
    """Raise :class:`UnsupportedBlockError` naming the first stage the step cannot express."""
    if getattr(model, "input_kind", "raw") != "raw":
        raise UnsupportedBlockError(
            f"model {model.name!r} takes input_kind={model.input_kind!r}; the exported step "
            "consumes raw EMG windows only (the log-spectrogram transform is not part of the "
            f"model). Supported blocks: {supported_blocks()}"
        )
    for stage_name, classes in SUPPORTED.items():
        stage = getattr(model, stage_name)
        if not isinstance(stage, classes):
            raise UnsupportedBlockError(
                f"model {model.name!r}: {stage_name} block {type(stage).__name__} cannot be "
                f"exported as a streaming step. Supported blocks: {supported_blocks()}. "
                "Export a model built from conf/model/{tc_s4_small,tc_s4_medium,s4_large,"
                "gru_s4_small,egru_s4_small}.yaml or one of their variants."
            )


@dataclass(frozen=True)
class StateSpec:
    """One state tensor of the step: its name (``stage.block.field``) and shape."""

    name: str
    shape: tuple[int, ...]


class _S4DRealStep(nn.Module):
    """One S4D layer's recurrence in real arithmetic, frames unrolled.

    Buffers ``(H, modes)``: ``a_re, a_im`` (Ā), ``b_re, b_im`` (B̄), ``c_re, c_im`` (2 C);
    ``d (H)``; the head's ``out_weight (2H, H)``, ``out_bias (2H)``. All are snapshots of the
    layer's parameters at construction, in ``dtype``. ``Ā = exp(dt·A)`` and ``B̄`` come from the
    layer's float64 tables and are rounded once (computing them in float32 adds a few ulp of
    error to ``Ā`` and, through ``exp(dt·A) - 1``, to ``B̄``).
    """

    # the buffers registered below (declared for the type checker)
    a_re: torch.Tensor
    a_im: torch.Tensor
    b_re: torch.Tensor
    b_im: torch.Tensor
    c_re: torch.Tensor
    c_im: torch.Tensor
    d: torch.Tensor
    out_weight: torch.Tensor
    out_bias: torch.Tensor

    def __init__(self, layer: S4D, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        tables = layer.tables()  # float64 dt·A, B̄, C (eval-mode cache of the layer)
        a_bar, b_bar, c = torch.exp(tables.dt_a), tables.b_bar, tables.c
        for name, value in (
            ("a_re", a_bar.real),
            ("a_im", a_bar.imag),
            ("b_re", b_bar.real),
            ("b_im", b_bar.imag),
            ("c_re", 2 * c.real),  # the factor 2 of y = 2 Re(C z) folded in
            ("c_im", 2 * c.imag),
        ):
            self.register_buffer(name, value.detach().to(dtype).contiguous().clone())
        self.register_buffer("d", layer.D.detach().to(dtype).clone())
        # The 1x1 conv of the head as a Linear's (2H, H) weight, stored already squeezed: a
        # squeeze in the graph would make the ONNX weight a computed value, which the int8
        # quantiser treats as an activation instead of a per-channel weight.
        conv = layer.out_conv
        self.register_buffer("out_weight", conv.weight.detach().squeeze(-1).to(dtype).clone())
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("out_bias", bias.detach().to(dtype).clone())

    def forward(
        self, u: torch.Tensor, re: torch.Tensor, im: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``u (L, H)``, state ``re, im (H, modes)`` -> ``(head output (L, H), re, im)``."""
        ys = []
        for t in range(u.shape[0]):
            u_t = u[t].unsqueeze(-1)  # (H, 1)
            re, im = (
                self.a_re * re - self.a_im * im + self.b_re * u_t,
                self.a_re * im + self.a_im * re + self.b_im * u_t,
            )
            ys.append((self.c_re * re - self.c_im * im).sum(-1) + self.d * u[t])
        y = torch.stack(ys)  # (L, H)
        z = F.linear(F.gelu(y), self.out_weight, self.out_bias)
        return F.glu(z, dim=-1), re, im


class ExportableStep(nn.Module):
    """One output frame of ``model`` as a pure function of (raw window, real state).

    ``forward(window (stride, bands, electrodes), *state) -> (log_probs (K,), *new_state)``
    with the state tensors in :attr:`state_specs` order. :meth:`initial_state` is the state
    before the first window (all zeros, as the model's own streaming state).
    The model is put in eval mode (dropout off, BatchNorm statistics frozen).

    ``dtype`` is what the step computes in and what its state and log-probs are: float32 (the
    deployed step) or float64 (a float64 copy of the model: the exactness check of the
    export). The window is float32 in both (raw EMG is stored as float32).
    """

    def __init__(self, model: EMGModel, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"ExportableStep dtype must be float32 or float64, got {dtype}")
        check_exportable(model)
        model.eval()
        if dtype != next(model.parameters()).dtype:
            model = copy.deepcopy(model).to(dtype).eval()
        self.model = model
        self.dtype = dtype
        self.stride = model.stride
        encoder = cast(RotationInvariantEncoder, model.encoder)
        self.input_shape = (self.stride, encoder.bands, encoder.electrodes)
        self.num_classes = model.classifier.out_features
        backbone = cast(S4DBackbone, model.backbone)
        with torch.no_grad():
            self.s4_steps = nn.ModuleList(
                _S4DRealStep(cast(S4D, s4), dtype) for s4 in backbone.s4_layers
            )
        self.tc_strides: list[int] = []
        if isinstance(model.frontend, TemporalConvFrontend):
            # the offline model's eval path: each kernel = stride conv as a Linear over its
            # stacked frames with BatchNorm folded in (and ONNX Runtime has no float64 Conv)
            for i, (weight, bias, s) in enumerate(model.frontend._folded_layers()):
                self.register_buffer(f"tc_weight_{i}", weight.detach().clone())
                self.register_buffer(f"tc_bias_{i}", bias.detach().clone())
                self.tc_strides.append(s)
        specs: list[StateSpec] = []
        frontend = model.frontend
        if isinstance(frontend, EGRUFrontend):
            specs += [
                StateSpec("frontend.egru.c", (frontend.d_hidden,)),
                StateSpec("frontend.egru.y", (frontend.d_hidden,)),
            ]
        elif isinstance(frontend, GRUFrontend):
            specs.append(StateSpec("frontend.gru.h", (frontend.d_hidden,)))
        for i, s4 in enumerate(backbone.s4_layers):
            shape = (cast(S4D, s4).d_model, cast(S4D, s4).modes)
            specs += [
                StateSpec(f"backbone.{i}.ssm_re", shape),
                StateSpec(f"backbone.{i}.ssm_im", shape),
            ]
        self.state_specs: tuple[StateSpec, ...] = tuple(specs)

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.state_specs]

    def initial_state(self) -> tuple[torch.Tensor, ...]:
        """Zero state, one tensor of :attr:`dtype` per :attr:`state_specs` entry."""
        return tuple(torch.zeros(s.shape, dtype=self.dtype) for s in self.state_specs)

    # -- stages --------------------------------------------------------------------------
    def _frontend(
        self, x: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x (T_enc, C)`` -> ``(backbone input (T_bb, C'), frontend state)``."""
        frontend = self.model.frontend
        if isinstance(frontend, IdentityFrontend):
            return x, []
        if isinstance(frontend, TemporalConvFrontend):
            for i, s in enumerate(self.tc_strides):
                weight, bias = getattr(self, f"tc_weight_{i}"), getattr(self, f"tc_bias_{i}")
                frames = x.reshape(x.shape[0] // s, s, x.shape[1]).transpose(1, 2)
                x = F.gelu(F.linear(frames.reshape(frames.shape[0], -1), weight, bias))
            return x, []
        rec = cast(GRUFrontend | EGRUFrontend, frontend)
        p = rec.mean_pooling
        if p > 1:
            x = x.reshape(x.shape[0] // p, p, x.shape[1]).mean(1)
        if isinstance(rec, EGRUFrontend):
            hs, new_state = self._egru(rec, x, state[0], state[1])
        else:
            hs, new_state = self._gru(cast(GRUFrontend, rec), x, state[0])
        z = hs.mean(0, keepdim=True) if rec.reduction == "mean" else hs[-1:]
        z = rec.norm(rec.linear(z))  # eval: dropout is the identity; norm over (1, F)
        return F.relu(z), new_state

    @staticmethod
    def _gru(
        rec: GRUFrontend, x: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """torch.nn.GRU's equations (gates r, z, n) over ``x (steps, C)`` from ``h (H,)``."""
        # layer 0 of torch.nn.GRU: weight_ih, weight_hh, bias_ih, bias_hh
        w_ih, w_hh, *biases = rec.rnn.all_weights[0]
        b_ih, b_hh = biases if biases else (None, None)
        gx_all = F.linear(x, w_ih, b_ih)
        hidden = rec.d_hidden
        outs = []
        for t in range(x.shape[0]):
            gx, gh = gx_all[t], F.linear(h, w_hh, b_hh)
            r = torch.sigmoid(gx[:hidden] + gh[:hidden])
            z = torch.sigmoid(gx[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
            n = torch.tanh(gx[2 * hidden :] + r * gh[2 * hidden :])
            h = n + z * (h - n)
            outs.append(h)
        return torch.stack(outs), [h]

    @staticmethod
    def _egru(
        rec: EGRUFrontend, x: torch.Tensor, c: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The EGRU recurrence in eval mode (zoneout blend ``1 - p``), as ``EGRUScan``."""
        hidden = rec.d_hidden
        theta = rec.threshold.clamp(0.0, 1.0)  # EvNN keeps thresholds in [0, 1]
        keep = 1.0 - rec.zoneout
        gx_all = F.linear(x, rec.weight_ih, rec.bias_ih)
        outs = []
        for t in range(x.shape[0]):
            gx, gh = gx_all[t], F.linear(y, rec.weight_hh, rec.bias_hh)
            r = torch.sigmoid(gx[:hidden] + gh[:hidden])
            z = torch.sigmoid(gx[hidden : 2 * hidden] + gh[hidden : 2 * hidden])
            n = torch.tanh(gx[2 * hidden :] + r * gh[2 * hidden :])
            c_new = c + keep * ((n + z * (c - n)) - c)
            fired = c_new > theta
            y = torch.where(fired, c_new, torch.zeros_like(c_new))
            c = torch.where(fired, c_new - theta, c_new)
            outs.append(y)
        return torch.stack(outs), [c, y]

    def _backbone(
        self, x: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x (T_bb, C)`` (``T_bb = backbone.stride``) -> ``((1, d_output), new SSM states)``."""
        backbone = cast(S4DBackbone, self.model.backbone)
        x = backbone.encoder(x)
        new_state: list[torch.Tensor] = []
        for i, (s4_step, norm, pool) in enumerate(
            zip(self.s4_steps, backbone.norms, backbone.end_pools, strict=True)
        ):
            z, re, im = s4_step(x, state[2 * i], state[2 * i + 1])
            x = z + x  # eval: the outer tied dropout is the identity
            if pool > 1:
                x = x.reshape(x.shape[0] // pool, pool, x.shape[1]).mean(1)
            x = norm(x)
            new_state += [re, im]
        return F.gelu(backbone.decoder(x)), new_state

    def forward(self, window: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``window (stride, bands, electrodes)`` -> ``(log_probs (K,), *new_state)``."""
        model = self.model
        window = window.to(self.dtype)
        x = model.encoder(window.unsqueeze(1)).squeeze(1)  # (stride / pool, 2F)
        n_front = len(self.state_specs) - 2 * len(self.s4_steps)
        x, front_state = self._frontend(x, list(state[:n_front]))
        x, back_state = self._backbone(x, list(state[n_front:]))
        log_probs = F.log_softmax(model.classifier(x[0]), dim=-1)
        return (log_probs, *front_state, *back_state)


@torch.no_grad()
def stream_step(
    step: ExportableStep, emg: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
) -> torch.Tensor:
    """Run ``step`` over a whole session ``emg (T, bands, electrodes)``: ``(T // stride, K)``.

    The trailing ``T % stride`` samples make no frame (as the offline model drops them).
    """
    stride = step.stride
    state = step.initial_state() if state is None else state
    frames = []
    for k in range(emg.shape[0] // stride):
        out = step(emg[k * stride : (k + 1) * stride], *state)
        frames.append(out[0])
        state = tuple(out[1:])
    if not frames:
        return emg.new_zeros(0, cast(int, step.num_classes))
    return torch.stack(frames)
