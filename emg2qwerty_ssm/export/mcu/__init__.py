"""Cortex-M cross-compilation, footprint checks and QEMU runs, see docs/mcu.md."""
