"""Cost cards: aggregation, the FlopCounterMode cross-check and the paper's MAC/s
(docs/models.md#macs-per-stage)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from emg2qwerty_ssm.models.card import format_card
from emg2qwerty_ssm.models.cost import (
    BlockCost,
    card_metrics,
    conv_cost,
    flop_counter_weight_macs,
    linear_cost,
    model_card,
    norm_cost,
    pool_cost,
    summarize,
    trainable_params,
)

# ----------------------------------------------------------------------------- stand-in model
# A small model with the EMGModel cost API (stride, input_rate_hz, cost()) whose layers are
# chosen so that every kind of cost entry occurs: pooling (other), Linear and strided Conv1d
# (weight), a diagonal recurrence (recurrent + state) and an event-weighted layer.


class _PoolLinear(nn.Module):
    """(T, N, 4) at rate r -> mean-pool 2 -> Linear(4, 6): (T // 2, N, 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0] // 2 * 2
        x = x[:t].reshape(t // 2, 2, *x.shape[1:]).mean(1)
        return self.lin(x)

    def cost(self, rate: float) -> list[BlockCost]:
        return [
            BlockCost("encoder.pool", "pool", 0, rate, rate / 2, other_ops_per_s=4 * rate),
            BlockCost(
                "encoder.lin", "linear", 30, rate / 2, rate / 2, weight_macs_per_s=24 * rate / 2
            ),
        ]


class _Conv(nn.Module):
    """(T, N, 6) -> Conv1d(6, 5, k=3, s=3): (T // 3, N, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(6, 5, 3, stride=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(1, 2, 0)).permute(2, 0, 1)

    def cost(self, rate: float) -> list[BlockCost]:
        return [
            BlockCost("frontend.conv", "conv", 95, rate, rate / 3, weight_macs_per_s=90 * rate / 3)
        ]


class _Recurrent(nn.Module):
    """Diagonal recurrence h_t = a*h_{t-1} + x_t (5 channels) then an event-gated Linear(5, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.full((5,), 0.5))
        self.out = nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, ys = torch.zeros_like(x[0]), []
        for x_t in x:
            h = self.a * h + x_t
            ys.append(h)
        return self.out(torch.stack(ys))

    def cost(self, rate: float) -> list[BlockCost]:
        return [
            BlockCost(
                "backbone.rec", "ssm", 5, rate, rate, recurrent_macs_per_s=5 * rate, state_size=5
            ),
            BlockCost(
                "backbone.out",
                "linear",
                15,
                rate,
                rate,
                weight_macs_per_s=15 * rate,
                event_macs_per_s=0.25 * 15 * rate,
            ),
        ]


class StandIn(nn.Module):
    input_rate_hz = 600.0
    stride = 6
    name = "stand_in"

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.frontend, self.backbone = _PoolLinear(), _Conv(), _Recurrent()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.frontend(self.encoder(x)))

    def cost(self, input_rate_hz: float | None = None) -> list[BlockCost]:
        rate = input_rate_hz or self.input_rate_hz
        return [
            *self.encoder.cost(rate),
            *self.frontend.cost(rate / 2),
            *self.backbone.cost(rate / 6),
        ]


def test_card_totals_stages_and_memory() -> None:
    card = model_card(StandIn())
    r = 600.0
    weight = 24 * r / 2 + 90 * r / 6 + 15 * r / 6
    assert card["weight_macs_per_second"] == pytest.approx(weight)
    assert card["recurrent_macs_per_second"] == pytest.approx(5 * r / 6)
    assert card["macs_per_second"] == pytest.approx(weight + 5 * r / 6)
    assert card["event_macs_per_second"] == pytest.approx(weight + 5 * r / 6 - 0.75 * 15 * r / 6)
    assert card["other_ops_per_second"] == pytest.approx(4 * r)
    params = sum(p.numel() for p in StandIn().parameters())
    assert card["params"] == card["params_from_blocks"] == params == 145
    assert card["weight_bytes_fp32"] == 4 * params and card["weight_bytes_int8"] == params
    assert card["state_size"] == 5 and card["state_bytes_fp32"] == 20
    assert card["output_rate_hz"] == pytest.approx(100.0)
    assert card["latency_s"] == pytest.approx(0.01)  # causal: one 6-sample frame at 600 Hz
    assert [s["name"] for s in card["stages"]] == ["encoder", "frontend", "backbone"]
    assert sum(s["macs_per_second"] for s in card["stages"]) == pytest.approx(
        card["macs_per_second"]
    )
    assert card["stages"][1]["params"] == 95 and card["stages"][1]["output_rate_hz"] == 100
    assert "event_macs_per_second" not in card["stages"][0]  # dense stage
    metrics = card_metrics(card)
    assert metrics["cost/macs_per_second"] == card["macs_per_second"]
    assert all(isinstance(v, float) for v in metrics.values())
    json.dumps(card)  # the card is what results.json stores


def test_flop_counter_agrees_with_weight_macs_of_stand_in() -> None:
    model = StandIn()
    x = torch.randn(600, 2, 4)  # 1 s, divisible by the model stride
    measured = flop_counter_weight_macs(model, x, input_rate_hz=600.0)
    assert measured["total"] == pytest.approx(
        model_card(model)["weight_macs_per_second"], rel=1e-12
    )
    assert measured["aten.convolution"] == pytest.approx(90 * 100)


def test_dense_model_has_no_event_entry_and_table_prints() -> None:
    blocks = [BlockCost("a.x", "linear", 3, 10, 10, weight_macs_per_s=30.0)]
    card = summarize(blocks, 10.0, stride=1, name="tiny")
    assert "event_macs_per_second" not in card
    text = format_card(card)
    assert "tiny" in text and "core MAC/s (weight + recurrent): 30.0" in text
    assert "total" in format_card(card, blocks=True)


def test_bad_block_costs_are_named() -> None:
    bad = BlockCost("frontend.gru", "gru", 10, 500, 500, weight_macs_per_s=float("nan"))
    with pytest.raises(ValueError, match="frontend.gru"):
        summarize([bad], 500.0)
    with pytest.raises(ValueError, match="empty"):
        summarize([], 500.0)


# ----------------------------------------------------------------------------- paper models

PAPER = {  # docs/models.md: params, core MAC/s, weight-layer MAC/s, output rate (Hz)
    "s4_large": (1_278_691, 192_336_062.5, 157_248_062.5, 31.25),
    "tc_s4_medium": (697_101, 32_637_375, 30_573_375, 2000 / 96),
    "tc_s4_small": (388_437, 13_581_375, 11_517_375, 2000 / 96),
}


def _build(*overrides: str) -> nn.Module:
    from emg2qwerty_ssm.models import build_model
    from emg2qwerty_ssm.models.card import compose_config

    cfg = compose_config(list(overrides), config_name=None)  # the model group alone
    return build_model(cfg.model)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_model_cards_and_flop_counter(name: str) -> None:
    params, macs, weight, rate = PAPER[name]
    model = _build(f"+model={name}").eval()
    card = model_card(model)
    assert card["params"] == card["params_from_blocks"] == params
    # exact to a thousandth of a MAC/s (the layer rates 2000/96 Hz are not binary fractions)
    assert round(card["macs_per_second"], 3) == macs
    assert round(card["weight_macs_per_second"], 3) == weight
    assert round(card["recurrent_macs_per_second"], 3) == macs - weight
    assert card["output_rate_hz"] == pytest.approx(rate)
    assert card["latency_s"] == pytest.approx(1 / rate)  # causal, block-wise: one frame
    # The weight layers agree exactly with torch's FLOP counter on a batch forward
    # (docs/models.md#cost-convention cross-check); 6144 samples is a whole number of 64- and
    # 96-sample frames.
    x = torch.randn(96 * 64, 1, 2, 16)
    assert round(flop_counter_weight_macs(model, x, 2000.0)["total"], 3) == weight


def test_tds_baseline_is_about_1046_mega() -> None:
    card = model_card(_build("+model=tds_conv_ctc"))
    assert card["input_rate_hz"] == 125.0
    assert card["macs_per_second"] == pytest.approx(1.046e9, rel=1e-3)


def test_cli_json_composes_frontend_override(capsys: pytest.CaptureFixture) -> None:
    from emg2qwerty_ssm.cost import main

    assert main(["model=tc_s4_small", "model/frontend=gru", "format=json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["model"] == "tc_s4_small"
    assert card["params"] != PAPER["tc_s4_small"][0]  # the GRU front-end replaced the TCs
    assert [s["name"] for s in card["stages"]][:2] == ["encoder", "frontend"]
    assert card["macs_per_second"] > 0 and "blocks" not in card
    assert main(["model=tc_s4_small", "format=xml"]) == 2
    assert "format='xml'" in capsys.readouterr().err


ALONE = [("tds_conv_ctc", 125.0, None), *((n, 2000.0, PAPER[n][1]) for n in sorted(PAPER))]


@pytest.mark.parametrize(("name", "rate", "macs"), ALONE)
def test_cli_card_of_the_model_group_alone(name, rate, macs, capsys) -> None:
    """The model files set no rate: composed alone (here because the full config fails on an
    unknown dataset) a model reads at the rate of its input kind's transforms."""
    from emg2qwerty_ssm.cost import main

    assert main([f"model={name}", "dataset=no_such_dataset", "format=json"]) == 0
    captured = capsys.readouterr()
    assert "composing the model group alone" in captured.err
    card = json.loads(captured.out)
    assert card["input_rate_hz"] == rate
    if macs is not None:
        assert round(card["macs_per_second"], 3) == macs
    else:
        assert card["macs_per_second"] == pytest.approx(1.046e9, rel=1e-3)
    # the full config gives the same card
    assert main([f"model={name}", "format=json"]) == 0
    assert json.loads(capsys.readouterr().out) == card


def test_egru_card_weights_macs_by_measured_activity() -> None:
    model = _build("+model=egru_s4_small").eval()
    dense = model_card(model)
    assert dense["event_macs_per_second"] == dense["macs_per_second"]  # nothing measured yet
    with torch.no_grad():
        model(torch.randn(96 * 20, 2, 2, 16))  # an evaluation pass measures the activity
    card = model_card(model)
    assert card["macs_per_second"] == dense["macs_per_second"]
    assert card["event_macs_per_second"] < card["macs_per_second"]
    frontend = next(s for s in card["stages"] if s["name"] == "frontend")
    assert frontend["event_macs_per_second"] < frontend["macs_per_second"]


# ----------------------------------------------------------------------------- helpers, CLI


def test_layer_helpers_follow_the_convention() -> None:
    lin = nn.Linear(4, 6)
    block = linear_cost("a.lin", lin, 10.0, copies=3)
    assert (block.params, block.weight_macs_per_s, block.output_rate_hz) == (30, 720.0, 10.0)
    once_per_block = linear_cost("a.lin", lin, 10.0, output_rate_hz=2.0)
    assert once_per_block.weight_macs_per_s == 48.0 and once_per_block.input_rate_hz == 10.0
    conv = nn.Conv1d(6, 5, 3, stride=3)
    block = conv_cost("b.conv", conv, 30.0)
    assert (block.params, block.weight_macs_per_s, block.output_rate_hz) == (95, 900.0, 10.0)
    assert block.state_size == 2 * 6  # stride - 1 buffered input frames
    assert norm_cost("n", nn.Identity(), 10.0, 5) is None  # nothing to report
    assert norm_cost("n", nn.BatchNorm1d(5), 10.0, 5).other_ops_per_s == 0.0  # folds
    assert norm_cost("n", nn.LayerNorm(5), 10.0, 5).other_ops_per_s == 100.0  # 2 per element
    pool = pool_cost("p", 100.0, 4, 8)
    assert (pool.output_rate_hz, pool.other_ops_per_s, pool.state_size) == (25.0, 800.0, 24)
    frozen = nn.Linear(2, 2)
    frozen.bias.requires_grad_(False)
    assert trainable_params(frozen) == 4 and trainable_params(None) == 0


def test_both_card_commands_are_one_implementation(capsys: pytest.CaptureFixture) -> None:
    from emg2qwerty_ssm import cost
    from emg2qwerty_ssm.models import summary

    assert cost.main(["model=tc_s4_small", "blocks=true"]) == 0
    via_cost = capsys.readouterr().out
    assert summary.main(["model=tc_s4_small"]) == 0
    assert capsys.readouterr().out == via_cost
    assert "frontend.layers.0" in via_cost and "13,581,375" in via_cost
    assert cost.model_card is model_card and cost.BlockCost is BlockCost  # old import names
