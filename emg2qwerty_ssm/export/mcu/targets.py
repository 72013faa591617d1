"""Cortex-M targets: compiler flags, the QEMU board that emulates them and the part we check
the footprint against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str
    flash_bytes: int
    ram_bytes: int
    clock_hz: float


@dataclass(frozen=True)
class McuTarget:
    name: str  # "cortex-m4" | "cortex-m7"
    cflags: tuple[str, ...]
    part: Part  # the part the footprint must fit
    board: str  # qemu-system-arm -M
    flash_origin: int  # where the QEMU board has its code memory
    flash_length: int
    ram_origin: int
    ram_length: int


STM32F405 = Part("STM32F405", 1024 * 1024, 192 * 1024, 168e6)
STM32H743 = Part("STM32H743", 2 * 1024 * 1024, 1024 * 1024, 480e6)
PARTS = (STM32F405, STM32H743)

TARGETS = {
    "cortex-m4": McuTarget(
        "cortex-m4",
        ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        STM32F405,
        "netduinoplus2",  # QEMU's STM32F405: 1 MiB flash at 0x08000000, 192 KiB SRAM
        0x08000000,
        1024 * 1024,
        0x20000000,
        192 * 1024,
    ),
    "cortex-m7": McuTarget(
        "cortex-m7",
        ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"),
        STM32H743,
        "mps2-an500",  # QEMU's Cortex-M7 MPS2 board: 4 MiB SSRAM at 0, 4 MiB at 0x20000000
        0x00000000,
        4 * 1024 * 1024,
        0x20000000,
        4 * 1024 * 1024,
    ),
}


def get_target(name: str) -> McuTarget:
    if name not in TARGETS:
        raise ValueError(f"unknown MCU target {name!r}; choose one of {sorted(TARGETS)}")
    return TARGETS[name]
