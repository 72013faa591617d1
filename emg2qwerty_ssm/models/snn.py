"""Spiking front-end: leaky integrate-and-fire (LIF / PLIF) layers reduced to the backbone rate.

A faithful port of the authors' ``SJ_SNN`` (built on spikingjelly; see docs/models-extra.md
for what was read from their code). Per layer ``i`` of ``layer_sizes``: ``Linear`` (optional
bias) -> optional BatchNorm1d -> LIF or PLIF neurons -> (hidden layers only) an optional
learnable synapse filter. Blocks of ``HLfreq_ratio`` input steps are reduced to one backbone
frame by ``reduction_mode``, then ``activation_post_reduction`` is applied.

Written in plain PyTorch rather than on a library, on purpose:

- spikingjelly 2.0 (the authors' library) pulls in torchvision, torchaudio, tensorboard,
  SciencePlots and loguru (torchvision/torchaudio would have to match the pinned CPU torch),
  keeps the neuron state inside its modules, and its CPU path is a Python loop over time
  steps as well, so it would buy no speed;
- snnTorch's ``Leaky`` neuron has no ``decay_input``, no reset to an arbitrary ``v_reset`` and
  resets one step late (from the previous membrane), so it cannot reproduce ``SJ_SNN``.

The dynamics below are spikingjelly's (``LIFNode`` / ``ParametricLIFNode``, ``ATan``,
``SynapseFilter``) with an explicit state, which streaming needs. Layers have no recurrent
weights, so the network runs layer by layer over whole sequences; only the membrane
recurrence loops over time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from emg2qwerty_ssm.models.activity import (  # noqa: F401 (re-exported)
    activity_metrics,
    regularization_loss,
    reset_activity,
)
from emg2qwerty_ssm.models.base import State, StreamingModule
from emg2qwerty_ssm.models.cost import BlockCost, norm_cost, trainable_params
from emg2qwerty_ssm.models.snn_layers import BlockBatchNorm1d, LIFNeurons, SynapseFilter
from emg2qwerty_ssm.models.snn_surrogate import post_reduction_activation

REDUCTIONS = ("mean_act", "mean_mempot", "last_mempot")
NEURONS = ("lif", "plif")


class SNNFrontend(StreamingModule):
    """Spiking front-end: ``(T, N, in_features) -> (T // HLfreq_ratio, N, layer_sizes[-1])``.

    Every forward starts from the resting state (the authors reset the network at the start
    of every batch); :meth:`forward_stream` carries the state explicitly. Activity (fraction
    of spikes per spiking layer) is accumulated over forwards since :meth:`reset_activity`.
    """

    kind = "snn"

    def __init__(
        self,
        in_features: int,
        layer_sizes: Sequence[int] = (128, 150),
        bias: bool = True,
        batchnorm: bool = True,
        neuron: str = "lif",
        tau_mem: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: float | str | None = 0.0,
        detach_reset: bool = False,
        alpha_surr_grad: float = 2.0,
        tau_synapse_filter: float = -1.0,
        HLfreq_ratio: int = 24,  # noqa: N803 (the authors' name)
        reduction_mode: str = "mean_act",
        include_neurons_in_last_layer: bool = True,
        detach_hidden_on_chunks: bool = False,
        activation_post_reduction: str = "none",
        sparsity_spiking_activity: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(v_reset, str):  # the authors' "none"; sweep choices cannot hold null
            if v_reset.lower() not in ("none", "soft"):
                raise ValueError(f"SNNFrontend: v_reset must be a number or none, got {v_reset!r}")
            v_reset = None
        sizes = list(layer_sizes)
        if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(f"SNNFrontend: layer_sizes must be positive ints, got {sizes!r}")
        if not isinstance(HLfreq_ratio, int) or HLfreq_ratio < 1:
            raise ValueError(
                f"SNNFrontend: HLfreq_ratio must be a positive int, got {HLfreq_ratio!r}"
            )
        if neuron not in NEURONS:
            raise ValueError(f"SNNFrontend: neuron must be one of {NEURONS}, got {neuron!r}")
        if reduction_mode not in REDUCTIONS:
            raise ValueError(
                f"SNNFrontend: reduction_mode must be one of {REDUCTIONS}, got {reduction_mode!r}"
            )
        if not include_neurons_in_last_layer and reduction_mode == "mean_act":
            raise ValueError(
                "SNNFrontend: include_neurons_in_last_layer=false needs reduction_mode "
                "mean_mempot or last_mempot (mean_act averages the last layer's spikes)"
            )
        if not alpha_surr_grad > 0:
            raise ValueError(f"SNNFrontend: alpha_surr_grad must be > 0, got {alpha_surr_grad!r}")
        if not math.isfinite(v_threshold):
            raise ValueError(f"SNNFrontend: v_threshold must be finite, got {v_threshold!r}")
        if not tau_mem > 1.0:
            raise ValueError(f"SNNFrontend: tau_mem must be > 1, got {tau_mem!r}")
        if 0.0 < tau_synapse_filter <= 1.0:
            raise ValueError(
                "SNNFrontend: tau_synapse_filter must be > 1 (or <= 0: off), "
                f"got {tau_synapse_filter!r}"
            )
        if sparsity_spiking_activity < 0:
            raise ValueError(
                "SNNFrontend: sparsity_spiking_activity must be >= 0, "
                f"got {sparsity_spiking_activity!r}"
            )
        self.in_features, self.out_features = in_features, sizes[-1]
        self.layer_sizes = sizes
        self.stride = HLfreq_ratio
        self.reduction_mode = reduction_mode
        self.detach_hidden_on_chunks = detach_hidden_on_chunks
        self.sparsity_spiking_activity = sparsity_spiking_activity
        last = len(sizes) - 1
        self.linears = nn.ModuleList(
            nn.Linear(c_in, c_out, bias=bias)
            for c_in, c_out in zip([in_features, *sizes], sizes, strict=False)
        )
        self.norms = nn.ModuleList(
            BlockBatchNorm1d(c) if batchnorm else nn.Identity() for c in sizes
        )
        neurons: list[nn.Module] = []
        for i in range(len(sizes)):
            if i == last and not include_neurons_in_last_layer:
                neurons.append(nn.Identity())
                continue
            spiking = i < last or reduction_mode == "mean_act"
            neurons.append(
                LIFNeurons(
                    neuron, tau_mem, decay_input, v_threshold, v_reset, detach_reset,
                    alpha_surr_grad, spiking,
                )
            )  # fmt: skip
        self.neurons = nn.ModuleList(neurons)
        self.synapses = nn.ModuleList(
            SynapseFilter(tau_synapse_filter)
            if tau_synapse_filter > 0 and i < last
            else nn.Identity()
            for i in range(len(sizes))
        )
        self.post_activation = post_reduction_activation(activation_post_reduction)
        self.reset_activity()
        self._regularizer: list[torch.Tensor] = []

    # -- activity ----------------------------------------------------------------------------
    def spiking_layers(self) -> list[int]:
        return [i for i, n in enumerate(self.neurons) if isinstance(n, LIFNeurons) and n.spiking]

    def reset_activity(self) -> None:
        """Forget the accumulated spike counts."""
        self._spikes = {i: 0.0 for i in self.spiking_layers()}
        self._unit_steps = {i: 0 for i in self.spiking_layers()}
        self.last_layer_activity: dict[int, float] = {}

    @property
    def layer_activity(self) -> dict[int, float]:
        """``{layer: fraction of (neuron, step) pairs that spiked}`` since the last reset."""
        return {i: self._spikes[i] / n for i, n in self._unit_steps.items() if n}

    @property
    def activity_rate(self) -> float | None:
        """Spike fraction over all spiking layers since the last reset (None before a step)."""
        total = sum(self._unit_steps.values())
        return sum(self._spikes.values()) / total if total else None

    def regularization_loss(self) -> torch.Tensor | None:
        """``sparsity_spiking_activity * sum_i mean(spikes_i)^2`` over the hidden layers of the
        last forward with gradients (the authors' MSE of the mean activity to zero; the last
        layer is not regularised); None when the weight is 0 or nothing was recorded."""
        if not self._regularizer:
            return None
        terms = self._regularizer
        self._regularizer = []  # used once: a later forward records its own
        return self.sparsity_spiking_activity * torch.stack([m * m for m in terms]).sum()

    def activity_metrics(self) -> dict[str, float]:
        """Per-layer spike fraction of the last forward, for the loggers."""
        return {f"spike_fraction_{i}": a for i, a in self.last_layer_activity.items()}

    # -- the network -------------------------------------------------------------------------
    def initial_state(self, batch_size: int, device: torch.device | None = None) -> State:
        dtype = cast(nn.Linear, self.linears[0]).weight.dtype
        v = [
            torch.full((batch_size, c), n.initial_v(), device=device, dtype=dtype)
            if isinstance(n, LIFNeurons)
            else None
            for n, c in zip(self.neurons, self.layer_sizes, strict=True)
        ]
        syn = [
            torch.zeros(batch_size, c, device=device, dtype=dtype)
            if isinstance(f, SynapseFilter)
            else None
            for f, c in zip(self.synapses, self.layer_sizes, strict=True)
        ]
        buffer = torch.zeros(0, batch_size, self.in_features, device=device, dtype=dtype)
        return {"v": v, "syn": syn, "buffer": buffer}

    def _run(self, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        """Whole blocks ``(B * R, N, in)`` from ``state`` -> ``(B, N, out)`` and the new state."""
        r = self.stride
        detach_every = r if (self.detach_hidden_on_chunks and torch.is_grad_enabled()) else None
        record_reg = self.sparsity_spiking_activity > 0 and torch.is_grad_enabled()
        new_v, new_syn = list(state["v"]), list(state["syn"])
        reg: list[torch.Tensor] = []
        last = len(self.layer_sizes) - 1
        h = x
        for i, (linear, norm, neurons, synapse) in enumerate(
            zip(self.linears, self.norms, self.neurons, self.synapses, strict=True)
        ):
            h = linear(h)
            if isinstance(norm, BlockBatchNorm1d):
                h = norm.forward_blocks(h, r)
            if isinstance(neurons, LIFNeurons):
                out, _, new_v[i] = neurons.scan(h, state["v"][i], detach_every)
                if neurons.spiking:
                    fired = float(out.detach().sum())
                    self._spikes[i] += fired
                    self._unit_steps[i] += out.numel()
                    self.last_layer_activity[i] = fired / out.numel()
                    if record_reg and i < last:
                        reg.append(out.mean())
                h = out  # spikes, or the membrane of the non-spiking read-out layer
            if isinstance(synapse, SynapseFilter):
                h, new_syn[i] = synapse.scan(h, state["syn"][i])
        if record_reg:
            self._regularizer = reg
        blocks = h.reshape(h.shape[0] // r, r, *h.shape[1:])
        z = blocks[:, -1] if self.reduction_mode == "last_mempot" else blocks.mean(1)
        return self.post_activation(z), {"v": new_v, "syn": new_syn}

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"SNNFrontend: expected input (T, N, {self.in_features}), got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, N, in_features) -> (T // HLfreq_ratio, N, out_features); starts at rest."""
        self._check(x)
        usable = x.shape[0] // self.stride * self.stride
        if usable == 0:
            return x.new_zeros(0, x.shape[1], self.out_features)
        state = self.initial_state(x.shape[1], x.device)
        return self._run(x[:usable], state)[0]

    def forward_stream(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Consume ``(t, N, in_features)``; emit the blocks it completes.

        The state holds every layer's membrane and synapse trace and the input frames of the
        unfinished block, so any chunking gives the offline output (train or eval mode: the
        training BatchNorm statistics are per block too).
        """
        self._check(x)
        if state is None:
            state = self.initial_state(x.shape[1], x.device)
        buffered = torch.cat([state["buffer"], x], dim=0)
        usable = buffered.shape[0] // self.stride * self.stride
        if usable == 0:
            out = x.new_zeros(0, x.shape[1], self.out_features)
            return out, {**state, "buffer": buffered}
        out, new = self._run(buffered[:usable], state)
        return out, {**new, "buffer": buffered[usable:]}

    # -- cost --------------------------------------------------------------------------------
    def cost(self, input_rate_hz: float) -> list[BlockCost]:
        """Dense and event-driven cost (docs/models-extra.md, "Spiking front-end").

        A layer whose input is the previous layer's raw spikes only needs a weight column per
        spike: its event MAC/s are the dense ones times the measured spike fraction (1 before
        any forward: an upper bound). Layer 0 (dense features) and layers fed by a synapse
        filter (a decaying, non-sparse trace) are counted dense.
        """
        rate, out_rate = input_rate_hz, input_rate_hz / self.stride
        activity = self.layer_activity
        costs: list[BlockCost] = []
        c_in = self.in_features
        for i, c in enumerate(self.layer_sizes):
            linear = self.linears[i]
            dense = c_in * c * rate
            spikes_in = i > 0 and not isinstance(self.synapses[i - 1], SynapseFilter)
            event = dense * activity.get(i - 1, 1.0) if spikes_in else dense
            costs.append(
                BlockCost(
                    f"layers.{i}.linear", "linear", trainable_params(linear), rate, rate,
                    weight_macs_per_s=dense, event_macs_per_s=event,
                )
            )  # fmt: skip
            # BatchNorm folds into the Linear in inference
            norm = norm_cost(f"layers.{i}.norm", self.norms[i], rate, c)
            costs += [norm] if norm else []
            neurons = self.neurons[i]
            if isinstance(neurons, LIFNeurons):
                costs.append(
                    BlockCost(
                        f"layers.{i}.neurons", neurons.neuron, trainable_params(neurons),
                        rate, rate,
                        # charge (multiply-add), threshold compare, reset: ~4 ops per neuron
                        other_ops_per_s=(4 if neurons.spiking else 2) * c * rate,
                        state_size=c,
                    )
                )  # fmt: skip
            if isinstance(self.synapses[i], SynapseFilter):
                costs.append(
                    BlockCost(
                        f"layers.{i}.synapse", "synapse", trainable_params(self.synapses[i]),
                        rate, rate,
                        other_ops_per_s=3 * c * rate, state_size=c,
                    )
                )  # fmt: skip
            c_in = c
        mean = self.reduction_mode != "last_mempot"
        costs.append(
            BlockCost(
                "reduce", "pool", 0, rate, out_rate,
                other_ops_per_s=(c_in * rate if mean else 0.0) + c_in * out_rate,
                state_size=c_in if mean else 0,
            )
        )  # fmt: skip
        return costs
