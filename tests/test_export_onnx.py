"""ONNX export of the step, onnxruntime streaming parity, int8 QDQ and the export command."""

from __future__ import annotations

import copy
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
from emg2qwerty_ssm.export.quantize import input_layer_nodes, quantize_int8  # noqa: E402
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


def test_onnx_fp32_streamed_over_minutes_equals_the_float64_model(tc_small) -> None:
    """All of user 0's sessions back to back (81 s, 1,690 frames) streamed as one from a zero
    state against the float64 offline model (the exact function; the float32 PyTorch forward
    is itself up to ~3e-5 off for a trained model). Drift would show within a few memory
    spans: the slowest S4D mode decays to 1 % within 300 frames (14 s), so 81 s is ~6 of them;
    the export command measures the same on the 243 s demo split (docs/export.md, "Parity")."""
    model, step, path = tc_small
    emg = torch.cat(
        [
            load_session(p).emg
            for split in ("train", "val", "test")
            for p in synthetic_split("tiny", 0, "user0", split)
        ]
    )
    assert emg.shape[0] >= 80 * 2000
    slowest = max(float(torch.exp(s4.tables().dt_a).abs().max()) for s4 in model.backbone.s4_layers)
    assert slowest**300 < 1e-2  # the memory span the comment above relies on
    streamed = OnnxStreamer(path, step.state_specs, step.stride).run(emg)
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(emg.double().unsqueeze(1)).squeeze(1).numpy()
    error = np.abs(streamed - exact).max(axis=1)
    assert error.max() <= ATOL
    # and the last quarter is no worse than the first: no accumulation in the state
    quarter = len(error) // 4
    assert error[-quarter:].max() <= 3 * error[:quarter].max()


def test_float64_export_is_exact(tmp_path: Path) -> None:
    """The ONNX graph itself computes the model: exported in float64 and evaluated by ONNX's
    own reference evaluator (onnxruntime has no float64 Erf), it equals the float64 PyTorch
    model to 1e-7 (the exporter keeps GELU's 1/sqrt(2) as a float32 constant), far below the
    float32 rounding that the fp32 parity check has to allow for."""
    from onnx.reference import ReferenceEvaluator

    model = load_export_model(model="tc_s4_small")
    step = ExportableStep(model, torch.float64)
    path = export_onnx(step, tmp_path / "tc64.onnx")
    evaluator = ReferenceEvaluator(str(path))
    names = [i.name for i in onnx.load(str(path)).graph.input][1:]
    x = torch.randn(96 * 24, 2, 16)
    state = [s.numpy() for s in step.initial_state()]
    frames = []
    for k in range(24):
        feeds = dict(zip(names, state, strict=True))
        out = evaluator.run(None, {"window": x[k * 96 : (k + 1) * 96].numpy(), **feeds})
        frames.append(out[0])
        state = out[1:]
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double().unsqueeze(1)).squeeze(1).numpy()
    assert np.stack(frames).dtype == np.float64
    assert np.abs(np.stack(frames) - exact).max() <= 1e-7


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


def _weight_quantisation(proto: onnx.ModelProto) -> dict[str, tuple[int, int, float, float]]:
    """``{weight op name: (ONNX weight type, number of scales, min, max of the stored weight)}``
    for every Conv / Gemm / MatMul, through its DequantizeLinear when quantised."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    out = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        dq = producers.get(node.input[1])
        if dq is not None and dq.op_type == "DequantizeLinear":
            w, scales = inits[dq.input[0]], int(np.prod(inits[dq.input[1]].dims))
        else:
            w, scales = inits[node.input[1]], 0
        values = numpy_helper.to_array(w)
        out[node.name] = (w.data_type, scales, float(values.min()), float(values.max()))
    return out


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
    weights = _weight_quantisation(proto)
    assert len(weights) >= 2 + 3 + 8 + 2  # encoder bands, TC convs, S4D out_convs, linears
    # the products that see the raw window (the encoder's per-band MLP) stay float32 ...
    first = input_layer_nodes(path)
    assert len(first) == 2  # one per band
    for name in first:
        assert weights[name][:2] == (onnx.TensorProto.FLOAT, 0), name
    # ... every other weight is int8 with one scale per output channel, in 7 bits
    for name, (dtype, scales, lo, hi) in weights.items():
        if name not in first:
            assert dtype == onnx.TensorProto.INT8 and scales > 1, name
            assert lo >= -64 and hi <= 64, name  # reduce_range: 2 x 255 x 64 < 2**15
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
    # the options: every product int8 with full-range weights
    q_all = quantize_int8(
        path,
        tmp_path / "q_all.onnx",
        step.state_specs,
        step.stride,
        calibration_emg(4.0),
        max_samples=40,
        quantize_input_layer=True,
        reduce_range=False,
    )
    weights = _weight_quantisation(onnx.load(str(q_all)))
    assert all(w[0] == onnx.TensorProto.INT8 and w[1] > 1 for w in weights.values())
    assert min(w[2] for w in weights.values()) < -64  # the full int8 range is used
    with pytest.raises(ValueError, match="calibration_method"):
        quantize_int8(path, tmp_path / "x.onnx", step.state_specs, 96, emg, calibration_method="kl")


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
    assert report["max_abs_diff_by_precision"]["fp32"] <= ATOL  # vs the float64 model
    assert report["parity_reference"] == "offline PyTorch model in float64"
    assert 0 < report["torch_fp32_max_abs_diff"] <= ATOL
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
        (["model=tc_s4_small", "calibration_method=kl"], "choose one of"),
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
