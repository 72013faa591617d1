"""Export a trained model for deployment: the streaming step, ONNX, int8, C and Cortex-M
(docs/export.md, docs/mcu.md).

``ExportableStep(model)`` is the model's one-frame step with real, fixed-shape state;
``python -m emg2qwerty_ssm.export checkpoint=PATH target=onnx out=DIR`` is the command line.
"""

from emg2qwerty_ssm.export.step import (
    ExportableStep,
    StateSpec,
    UnsupportedBlockError,
    check_exportable,
    stream_step,
)

__all__ = [
    "ExportableStep",
    "StateSpec",
    "UnsupportedBlockError",
    "check_exportable",
    "stream_step",
]
