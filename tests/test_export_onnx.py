"""ONNX export of the step, onnxruntime streaming parity, int8 QDQ and the export command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")

import onnx  # noqa: E402

from emg2qwerty_ssm.export import ExportableStep  # noqa: E402
from emg2qwerty_ssm.export.__main__ import main  # noqa: E402
from emg2qwerty_ssm.export.common import (  # noqa: E402
    calibration_emg,
    load_export_model,
    load_session,
    synthetic_split,
)
from emg2qwerty_ssm.export.onnx_target import OnnxStreamer, export_onnx  # noqa: E402
from emg2qwerty_ssm.export.quantize import quantize_int8  # noqa: E402
from emg2qwerty_ssm.models import build_model  # noqa: E402
from emg2qwerty_ssm.models.summary import compose_model_config  # noqa: E402

ATOL = 1e-5
SMALL_GRU = [
    "model=gru_s4_small",
    "model.encoder.mlp_features=[8]",
    "model.frontend.d_hidden=12",
    "model.frontend.out_features=10",
    "model.backbone.d_model=16",
    "model.backbone.n_layers=2",
    "model.backbone.d_state=8",
]


@pytest.fixture(scope="module")
def test_session():
    return load_session(synthetic_split("tiny", 0, "user0", "test")[0])


@pytest.fixture(scope="module")
def tc_small(tmp_path_factory):
    model = load_export_model(model="tc_s4_small")
    step = ExportableStep(model)
    path = export_onnx(step, tmp_path_factory.mktemp("onnx") / "tc.onnx")
    return model, step, path


def test_tc_s4_small_onnx_streams_a_whole_session_like_pytorch(tc_small, test_session) -> None:
    model, step, path = tc_small
    assert sorted(p.name for p in path.parent.iterdir()) == ["tc.onnx"]  # one file
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input][:2] == ["window", "backbone_0_ssm_re"]
    emg = test_session.emg
    assert emg.shape[0] >= 10 * 2000  # a whole ~20 s session
    streamed = OnnxStreamer(path, step.state_specs, step.stride).run(emg)
    with torch.no_grad():
        offline = model(emg.unsqueeze(1)).squeeze(1).numpy()
    assert streamed.shape == offline.shape == (emg.shape[0] // 96, 99)
    assert np.abs(streamed - offline).max() <= ATOL


def test_recurrent_frontend_onnx_equals_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(compose_model_config(SMALL_GRU)).eval()
    step = ExportableStep(model)
    path = export_onnx(step, tmp_path / "gru.onnx")
    x = torch.randn(96 * 25, 2, 16)
    with torch.no_grad():
        offline = model(x.unsqueeze(1)).squeeze(1).numpy()
    streamed = OnnxStreamer(path, step.state_specs, step.stride).run(x)
    assert np.abs(streamed - offline).max() <= ATOL


def test_int8_quantises_weights_per_channel_and_keeps_the_recurrence_float(
    tc_small, test_session, tmp_path: Path
) -> None:
    model, step, path = tc_small
    q = quantize_int8(
        path,
        tmp_path / "q.onnx",
        step.state_specs,
        step.stride,
        calibration_emg(4.0),
        max_samples=40,
    )
    proto = onnx.load(str(q))
    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    # every Conv / Gemm / MatMul weight comes from an int8 per-channel DequantizeLinear
    weight_ops = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(weight_ops) >= 3 + 8 + 2  # TC convs, S4D out_convs, backbone linears
    per_channel = 0
    for node in weight_ops:
        dq = producers[node.input[1]]
        assert dq.op_type == "DequantizeLinear", node.name
        w = inits[dq.input[0]]
        assert w.data_type == onnx.TensorProto.INT8, node.name
        per_channel += int(np.prod(inits[dq.input[1]].dims) > 1)
    assert per_channel == len(weight_ops)
    # the S4D recurrence constants stay float32 and feed float arithmetic directly
    float_consts = [
        i
        for i in proto.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT and tuple(i.dims) == (96, 16)
    ]
    assert len(float_consts) >= 8 * 6  # a_re, a_im, b_re, b_im, c_re, c_im per layer
    emg = test_session.emg[: 96 * 60]
    fp32 = OnnxStreamer(path, step.state_specs, step.stride).run(emg)
    int8 = OnnxStreamer(q, step.state_specs, step.stride).run(emg)
    diff = np.abs(fp32 - int8).max()
    assert 0 < diff < 1.0  # quantised, and still close to the float model


def test_cli_onnx_int8_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["model=tc_s4_small", "precision=int8", f"out={out}", "calibration_seconds=3"]
    assert main([*args, "beam_size=5"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in (
        "target",
        "precision",
        "params",
        "max_abs_diff",
        "flash_bytes",
        "ram_bytes",
        "stack_bytes",
        "instructions_per_step",
        "fits",
        "cer",
    ):
        assert key in report, key
    assert report["target"] == "onnx" and report["precision"] == "int8"
    assert report["params"] == 388437
    assert report["max_abs_diff_by_precision"]["fp32"] <= ATOL
    assert set(report["cer"]) == {"fp32", "int8", "int8_vs_fp32"}
    assert set(report["cer"]["int8"]) == {"greedy", "beam"}
    assert set(report["fits"]) == {"STM32F405", "STM32H743"}
    assert report["onnxruntime_real_time_factor"] > 0
    assert report["state_bytes"] == 8 * 2 * 96 * 16 * 4  # 8 S4D layers, re/im, H x modes
    assert report["constant_bytes"] < 4 * report["params"]  # int8 weights
    assert (out / "model_int8.onnx").is_file() and (out / "step.json").is_file()
    # a second run refuses to replace the artefacts unless asked
    assert main(args) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint=/no/such.ckpt"], "no such file"),
        (["model=tds_conv_ctc"], "Supported blocks"),
        (["model=tc_s4_small", "target=fpga"], "choose one of"),
        (["model=tc_s4_small", "precision=int4"], "choose one of"),
        (["model=tc_s4_small", "targt=onnx"], "export.yaml"),
        (["model=no_such_model"], "conf/model/no_such_model.yaml"),
    ],
)
def test_cli_bad_input_is_a_clear_error(args, message, tmp_path: Path, capsys) -> None:
    assert main([*args, f"out={tmp_path / 'o'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "report.json").exists()


def test_cli_c_target_runs_the_generator_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "c"
    assert main(["model=tc_s4_small", "target=c", "precision=fp32", f"out={out}"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "c" and report["precision"] == "fp32"
    assert report["params"] == 388_437
    assert report["max_abs_diff"] < 1e-4 and report["greedy_text_equal"] is True
    assert (out / "emg_model.c").is_file() and (out / "emg_model.h").is_file()
