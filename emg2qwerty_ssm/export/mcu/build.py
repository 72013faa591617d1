"""Cross-compile a generated library into QEMU firmware and measure its footprint."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.export.cgen.csource import CLibrary
from emg2qwerty_ssm.export.cgen.host import ToolchainError, require_tool
from emg2qwerty_ssm.export.mcu.firmware import FIRMWARE_C, LINKER_SCRIPT
from emg2qwerty_ssm.export.mcu.targets import PARTS, McuTarget

INSTALL_HINT = (
    "run `make mcu-toolchain` "
    "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)"
)
CFLAGS: tuple[str, ...] = ("-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off")
CFLAGS += ("-ffunction-sections", "-fdata-sections", "-fstack-usage", "-DEMG_MODEL_USE_SMLAD")
FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")
RAM_SECTIONS = (".data", ".bss")
MIN_STACK = 2048  # bytes the board link keeps free for the stack
STACK_ALLOWANCE = 256  # static estimate: libm calls (expf, erff, logf) below the kernels


class ModelDoesNotFitError(ValueError):
    """The firmware needs more flash or RAM than the target part has."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Footprint:
    flash_bytes: int  # whole firmware: vectors, code, constants, initialised data
    ram_bytes: int  # static RAM: .data + .bss (state, scratch, the harness's I/O buffers)
    stack_bytes: int  # static estimate for emg_model_step (frames of step + deepest kernel)
    library_flash_bytes: int  # the generated library alone (text + data of emg_model.o)
    library_ram_bytes: int  # data + bss of emg_model.o
    fits: dict[str, bool] = field(default_factory=dict)

    def check(self, part_name: str) -> str | None:
        """None if it fits ``part_name``, else a message naming what does not fit."""
        part = next(p for p in PARTS if p.name == part_name)
        problems = []
        if self.flash_bytes > part.flash_bytes:
            problems.append(f"flash {self.flash_bytes} B > {part.flash_bytes} B")
        if self.ram_bytes + self.stack_bytes > part.ram_bytes:
            problems.append(
                f"RAM {self.ram_bytes} B + stack {self.stack_bytes} B > {part.ram_bytes} B"
            )
        return "; ".join(problems) or None


@dataclass
class McuBuild:
    elf: Path | None  # linked for the QEMU board (None when it does not fit the board)
    map_file: Path
    footprint: Footprint


def _run(cmd: list[str], what: str) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(cmd[:6])} ...):\n{result.stderr[-4000:]}")
    return result.stdout


def _sections(size_tool: str, elf: Path) -> dict[str, int]:
    out = _run([size_tool, "-A", str(elf)], "arm-none-eabi-size")
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def _static_stack(su_file: Path) -> int:
    frames = {}
    for line in su_file.read_text().splitlines():
        m = re.match(r"\S+:\d+:\d+:(\S+)\s+(\d+)\s+(\S+)", line)
        if m:
            frames[m.group(1)] = int(m.group(2))
    step = frames.pop("emg_model_step", 0)
    return step + max(frames.values(), default=0) + STACK_ALLOWANCE


def build_mcu(lib: CLibrary, target: McuTarget, out_dir: Path) -> McuBuild:
    """Compile ``lib`` + firmware for ``target``; link once with unbounded memory to measure
    and once for the QEMU board when it fits there."""
    cc = require_tool("arm-none-eabi-gcc", INSTALL_HINT)
    size_tool = require_tool("arm-none-eabi-size", INSTALL_HINT)
    build = out_dir / f"build-{target.name}"
    build.mkdir(parents=True, exist_ok=True)
    fw_c = build / "firmware.c"
    atomic_write_text(fw_c, FIRMWARE_C)
    flags = [*target.cflags, *CFLAGS, "-I", str(lib.header.parent)]
    objs = []
    for src in (lib.source, fw_c):
        obj = build / (src.stem + ".o")
        _run([cc, *flags, "-c", str(src), "-o", str(obj)], f"compiling {src.name}")
        objs.append(obj)
    # -fstack-usage writes <stem>.su next to the object (cwd-relative to -o)
    su = build / "emg_model.su"

    def link(name: str, flash: int, ram: int, min_stack: int) -> tuple[Path, Path]:
        script = build / f"{name}.ld"
        atomic_write_text(
            script,
            LINKER_SCRIPT.format(
                flash_origin=target.flash_origin,
                flash_length=flash,
                ram_origin=target.ram_origin,
                ram_length=ram,
                min_stack=min_stack,
            ),
        )
        elf, map_file = build / f"{name}.elf", build / f"{name}.map"
        cmd = [cc, *target.cflags, "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs"]
        cmd += ["-T", str(script), "-Wl,--gc-sections", f"-Wl,-Map={map_file}"]
        _run([*cmd, *map(str, objs), "-lm", "-o", str(elf)], f"linking {name}")
        return elf, map_file

    big = 256 * 1024 * 1024
    measure_elf, map_file = link("measure", big, big, 0)
    sec = _sections(size_tool, measure_elf)
    lib_sec = _sections(size_tool, objs[0])
    lib_flash = sum(v for k, v in lib_sec.items() if k.startswith((".text", ".rodata", ".data")))
    lib_ram = sum(v for k, v in lib_sec.items() if k.startswith((".data", ".bss")))
    fp = Footprint(
        flash_bytes=sum(sec.get(s, 0) for s in FLASH_SECTIONS),
        ram_bytes=sum(sec.get(s, 0) for s in RAM_SECTIONS),
        stack_bytes=_static_stack(su),
        library_flash_bytes=lib_flash,
        library_ram_bytes=lib_ram,
    )
    fp.fits = {p.name: fp.check(p.name) is None for p in PARTS}
    board_fits = (
        fp.flash_bytes <= target.flash_length and fp.ram_bytes + MIN_STACK <= target.ram_length
    )
    elf = (
        link("firmware", target.flash_length, target.ram_length, MIN_STACK)[0]
        if board_fits
        else None
    )
    return McuBuild(elf, map_file, fp)


def toolchain_available() -> str | None:
    """None when the cross compiler and QEMU are on PATH, else what is missing."""
    try:
        require_tool("arm-none-eabi-gcc", INSTALL_HINT)
        require_tool("qemu-system-arm", INSTALL_HINT)
    except ToolchainError as err:
        return str(err)
    return None
