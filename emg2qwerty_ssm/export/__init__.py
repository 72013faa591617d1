"""Export of trained models to deployment targets (ONNX, C, Cortex-M)."""
