"""The step as one ONNX file, and an onnxruntime streamer for it.

``export_onnx(step, path)`` writes the :class:`~emg2qwerty_ssm.export.step.ExportableStep`
with ``torch.onnx.export(..., dynamo=True)`` (needs ``onnxscript``) as a single self-contained
file (weights embedded, no external data). Inputs are ``window`` and the state tensors under
their :class:`StateSpec` names (dots replaced by underscores), outputs ``log_probs`` and
``new_<state name>``. :class:`OnnxStreamer` runs such a file over a session.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from emg2qwerty_ssm.atomic_io import atomic_write_bytes
from emg2qwerty_ssm.export.step import ExportableStep, StateSpec

OPSET = 18


def onnx_name(state_name: str) -> str:
    """ONNX value names are identifiers: ``backbone.0.ssm_re`` -> ``backbone_0_ssm_re``."""
    return state_name.replace(".", "_")


def export_onnx(step: ExportableStep, path: Path | str) -> Path:
    """Export ``step`` to ``path`` (one ``.onnx`` file, written atomically); return the path."""
    import onnx

    path = Path(path)
    inputs = [torch.zeros(step.input_shape), *step.initial_state()]
    input_names = ["window", *(onnx_name(s.name) for s in step.state_specs)]
    output_names = ["log_probs", *(f"new_{onnx_name(s.name)}" for s in step.state_specs)]
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping ..."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's progress chatter
            program = torch.onnx.export(
                step,
                tuple(inputs),
                input_names=input_names,
                output_names=output_names,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    if program is None:  # pragma: no cover - dynamo=True always returns an ONNXProgram
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    program.optimize()
    proto = program.model_proto
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return path


class OnnxStreamer:
    """Stream raw EMG through an exported step with onnxruntime (single thread by default).

    ``specs`` are the step's :attr:`~ExportableStep.state_specs` (the state is zero at start).
    """

    def __init__(
        self, path: Path | str, specs: Sequence[StateSpec], stride: int, threads: int = 1
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.specs, self.stride = tuple(specs), int(stride)
        self.state_names = [onnx_name(s.name) for s in self.specs]
        self.output_names = ["log_probs", *(f"new_{n}" for n in self.state_names)]
        # float32, or float64 for a step exported with dtype=torch.float64
        types = {i.name: i.type for i in self.session.get_inputs()}
        self.state_dtypes = [
            np.float64 if types[n] == "tensor(double)" else np.float32 for n in self.state_names
        ]

    def initial_state(self) -> list[np.ndarray]:
        pairs = zip(self.specs, self.state_dtypes, strict=True)
        return [np.zeros(spec.shape, dtype=dtype) for spec, dtype in pairs]

    def run(self, emg: np.ndarray | torch.Tensor) -> np.ndarray:
        """``emg (T, bands, electrodes)`` -> log-probs ``(T // stride, K)`` (float32, float64
        for a float64 step)."""
        x = np.ascontiguousarray(np.asarray(emg, dtype=np.float32))
        state = self.initial_state()
        frames = []
        for k in range(x.shape[0] // self.stride):
            feed = {"window": x[k * self.stride : (k + 1) * self.stride]}
            feed.update(zip(self.state_names, state, strict=True))
            out = self.session.run(self.output_names, feed)
            frames.append(out[0])
            state = out[1:]
        if not frames:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(frames)
