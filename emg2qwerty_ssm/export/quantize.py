"""Post-training static int8 quantisation of an exported step with onnxruntime (QDQ format).

Weights of the convolutions and linear layers (ONNX ``Conv``, ``MatMul``, ``Gemm``) but the
input layer become per-channel symmetric int8, their input activations per-tensor int8 with
ranges calibrated on training windows streamed from a zero state
(:class:`StreamCalibrationReader`). Everything else stays float32 by default: the S4D
recurrence ``z' = Ā z + B̄ u`` with its constants, the LayerNorms, GELU/GLU, the GRU/EGRU
gate arithmetic and the log-softmax. The state and ``Ā``
are the parts published work finds most sensitive to 8 bits; ``quantize_recurrence=True``
also quantises the element-wise ops (``Mul``/``Add``/``Sub``) to measure what that costs.

Two choices come from measurements on a trained TC_S4_small (docs/export.md, "int8"):

* **the input layer stays float32** (``quantize_input_layer=False``): the first products after
  the raw window (the encoder's per-band MLP) see pooled raw EMG, whose heavy tails (std ~5,
  extremes ~±250) leave a per-tensor int8 step of ~1.5, a quarter of a standard deviation;
  on the trained demo model quantising them cost 11-15 greedy CER points, every other product
  < 1. For TC_S4_small they are 2 x 16 x 36 weights.
* **7-bit weights** (``reduce_range=True``): onnxruntime's x86 int8 kernels without VNNI
  (AVX2, AVX-512F) add pairs of u8 x s8 products in 16 bits with saturation; full-range int8
  weights can saturate there and the results then differ from the QDQ model's arithmetic
  (measured: max |Δ log-prob| 21.6 with saturation vs 11.3 without, all layers quantised).
  Weights in [-64, 64] cannot (2 x 255 x 64 < 2^15), so the model computes the same on every
  CPU; on the trained model the 7-bit weights cost nothing measurable.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from emg2qwerty_ssm.atomic_io import atomic_write_bytes
from emg2qwerty_ssm.export.onnx_target import OnnxStreamer
from emg2qwerty_ssm.export.step import StateSpec

#: ONNX op types whose weights and inputs are quantised by default (convolutions, linears)
WEIGHT_OPS = ("Conv", "MatMul", "Gemm")
#: also quantised with ``quantize_recurrence=True``: the element-wise recurrence arithmetic
RECURRENCE_OPS = ("Mul", "Add", "Sub")


def input_layer_nodes(model_path: Path | str, input_name: str = "window") -> list[str]:
    """Names of the weight ops (:data:`WEIGHT_OPS`) reached from graph input ``input_name``
    without passing through another weight op: the products that see the raw input."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: list[str] = []
    seen: set[str] = set()
    frontier = [input_name]
    while frontier:
        value = frontier.pop()
        for node in consumers.get(value, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in WEIGHT_OPS:
                found.append(node.name)
            else:
                frontier.extend(node.output)
    return sorted(found)


class StreamCalibrationReader:
    """onnxruntime ``CalibrationDataReader``: the (window, state) feeds of a streamed session.

    The fp32 model at ``fp32_path`` is streamed over ``emg (T, bands, electrodes)`` from a zero
    state; every ``every``-th step's inputs (window and the state it started from) are one
    calibration sample, up to ``max_samples``.
    """

    def __init__(
        self,
        fp32_path: Path,
        specs: Sequence[StateSpec],
        stride: int,
        emg: torch.Tensor | np.ndarray,
        max_samples: int = 400,
        every: int = 1,
    ) -> None:
        streamer = OnnxStreamer(fp32_path, specs, stride)
        x = np.ascontiguousarray(np.asarray(emg, dtype=np.float32))
        state = streamer.initial_state()
        self.feeds: list[dict[str, np.ndarray]] = []
        for k in range(x.shape[0] // stride):
            feed = {"window": x[k * stride : (k + 1) * stride]}
            feed.update(zip(streamer.state_names, state, strict=True))
            if k % every == 0 and len(self.feeds) < max_samples:
                self.feeds.append(feed)
            state = streamer.session.run(streamer.output_names, feed)[1:]
        if not self.feeds:
            raise ValueError(
                f"calibration EMG of {x.shape[0]} samples is shorter than one step ({stride})"
            )
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


def quantize_int8(
    fp32_path: Path | str,
    out_path: Path | str,
    specs: Sequence[StateSpec],
    stride: int,
    calibration: torch.Tensor | np.ndarray,
    quantize_recurrence: bool = False,
    max_samples: int = 400,
    quantize_input_layer: bool = False,
    reduce_range: bool = True,
    calibration_method: str = "minmax",
) -> Path:
    """Write the int8 QDQ model of ``fp32_path`` to ``out_path`` (atomically); return it.

    ``quantize_input_layer``: quantise the products that see the raw window too (default
    float32); ``reduce_range``: 7-bit weights, safe from the 16-bit saturation of x86 int8
    kernels without VNNI (see the module docstring for both); ``calibration_method``:
    ``minmax`` or ``percentile`` (99.999 %), onnxruntime's calibrators (its ``entropy`` one
    returned exactly the MinMax ranges here, so it is not offered).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(StreamCalibrationReader, CalibrationDataReader):
        pass

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }
    if calibration_method not in methods:
        raise ValueError(
            f"calibration_method={calibration_method!r}: choose one of {sorted(methods)}"
        )
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    reader = _Reader(fp32_path, specs, stride, calibration, max_samples=max_samples)
    ops = list(WEIGHT_OPS) + (list(RECURRENCE_OPS) if quantize_recurrence else [])
    keep_float = [] if quantize_input_layer else input_layer_nodes(fp32_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        tmp_out = Path(tmp) / out_path.name
        root_log = logging.getLogger()
        level = root_log.level
        root_log.setLevel(logging.ERROR)  # the quantiser logs per-node chatter on the root logger
        try:  # the histogram calibrators also print() progress: keep the command's output clean
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(
                    str(fp32_path),
                    str(tmp_out),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=ops,
                    per_channel=True,
                    reduce_range=reduce_range,
                    nodes_to_exclude=keep_float,
                    calibrate_method=methods[calibration_method],
                    weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8,
                    extra_options={
                        "WeightSymmetric": True,
                        "ActivationSymmetric": False,
                        # ONNX MatMul weights are (in, out): one scale per output column
                        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
                    },
                )
        finally:
            root_log.setLevel(level)
        atomic_write_bytes(out_path, tmp_out.read_bytes())
    return out_path
