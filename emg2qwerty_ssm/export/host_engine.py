"""Compiled streaming engine: the microcontroller export's fp32 C, built and run on the host.

    engine = CStreamEngine(model)          # builds (or reuses) a shared library of the model
    log_probs = engine.push(chunk)         # chunk (T, bands, electrodes) of raw EMG, any T
    engine.reset()                         # start a new stream

The model is folded into the same float plan and the same generated C99 source as
``export_c(target="c", precision="fp32")`` (``cgen/plan.py``, ``cgen/emit_fp32.py``), in the
SIMD-friendly layout (``vector_width`` outputs per weight panel, mode-major S4D state); the
desktop streaming path and the microcontroller path are therefore one code. The source is
compiled with ``-O3 -march=native -ffp-contract=fast -fPIC -shared`` (no ``-ffast-math``: the
summation order is the model's), loaded with ``ctypes`` and called once per output frame;
Python keeps the samples of a chunk that do not fill a frame for the next chunk, so chunks of
any length give the same frames as the offline forward (within 1e-5, ``tests/test_cstream.py``).

Built libraries are cached under ``$EMG2QWERTY_SSM_CACHE/cstream`` (default
``~/.cache/emg2qwerty_ssm/cstream``) by a hash of the generated source, the flags, the
compiler's version and the CPU ``-march=native`` resolves to: new weights give a new source
and a new build; the same model reuses its library without compiling. A build compiles into
a temp directory inside the cache and renames the finished library into place, so a crash or
a concurrent build never leaves a half-written library under the final name.

The library keeps its state in static storage (it is the microcontroller code); several
engines of the same model share one loaded library, and each engine saves and restores its
own copy of the state (``emg_model_state``) when another engine used the library last.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emg2qwerty_ssm.atomic_io import fsync_dir
from emg2qwerty_ssm.export.cgen.emit_fp32 import emit_fp32
from emg2qwerty_ssm.export.cgen.host import ToolchainError
from emg2qwerty_ssm.export.cgen.plan import FloatPlan, UnsupportedModelError, build_plan
from emg2qwerty_ssm.models.model import EMGModel

__all__ = [
    "CStreamEngine",
    "SharedLibrary",
    "ToolchainError",
    "UnsupportedModelError",
    "build_shared_library",
    "cache_root",
    "find_compiler",
]

CACHE_ENV = "EMG2QWERTY_SSM_CACHE"
INSTALL_HINT = (
    "the compiled streaming engine needs a C compiler: install gcc (Debian/Ubuntu: "
    "apt-get install gcc; Fedora: dnf install gcc; macOS: xcode-select --install) or set CC; "
    "or stream with engine=fused"
)
# -ffp-contract=fast lets the compiler fuse a*b+c into one FMA (one rounding instead of two):
# measured within 1.4e-6 of the offline model on the paper's models, like "off"; its speed
# difference was within the noise of a loaded machine (docs/speed.md).
BASE_CFLAGS = ("-O3", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared")
# Measured on an AVX-512 host (gcc 12, TC_S4_small / TC_S4_medium / S4_large): panels of 64
# outputs and pairs of frames per weight pass beat 8/16/32 wide and groups of 1/4 (docs/speed.md).
DEFAULT_VECTOR_WIDTH = 64
DEFAULT_GROUP_FRAMES = 2
# GELU / sigmoid from inline erf / exp approximations that vectorise (S4_large ~1.35x faster;
# measured max |diff| to the offline model unchanged at ~1.4e-6); False: libm erff / expf,
# the microcontroller build's functions.
DEFAULT_INLINE_ACTIVATIONS = True


def find_compiler() -> str | None:
    """``$CC``, else ``gcc``, ``cc`` or ``clang`` on PATH; ``None`` when there is none."""
    for name in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if name and (path := shutil.which(name)):
            return path
    return None


def cache_root() -> Path:
    """``$EMG2QWERTY_SSM_CACHE/cstream``, else ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base) / "cstream"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "emg2qwerty_ssm" / "cstream"


@functools.lru_cache(maxsize=8)
def _compiler_identity(cc: str, arch_flags: tuple[str, ...]) -> str:
    """The compiler's version and what ``arch_flags`` resolve to on this CPU (cache key part:
    a library built with ``-march=native`` on one CPU may not run on another)."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    probe = subprocess.run(
        [cc, *arch_flags, "-E", "-v", "-x", "c", "-"],
        input="",
        capture_output=True,
        text=True,
    )
    resolved = [line for line in probe.stderr.splitlines() if "cc1" in line]
    return "\n".join([version.splitlines()[0] if version else cc, *resolved])


@functools.lru_cache(maxsize=8)
def arch_flags(cc: str) -> tuple[str, ...]:
    """``-march=native`` where the compiler accepts it, else no architecture flag."""
    probe = subprocess.run(
        [cc, "-march=native", "-x", "c", "-fsyntax-only", "-"],
        input="int x;\n",
        capture_output=True,
        text=True,
    )
    return ("-march=native",) if probe.returncode == 0 else ()


@dataclass(frozen=True)
class SharedLibrary:
    """A built library: ``path`` in the cache, its ``key`` and whether this call compiled it."""

    path: Path
    key: str
    compiled: bool
    cflags: tuple[str, ...]


def _generate(
    plan: FloatPlan, vector_width: int, group_frames: int, inline: bool
) -> tuple[str, str]:
    with tempfile.TemporaryDirectory(prefix="emg_cgen_") as tmp:
        lib = emit_fp32(
            plan,
            Path(tmp),
            vector_width=vector_width,
            group_frames=group_frames,
            inline_activations=inline,
        )
        return lib.header.read_text(), lib.source.read_text()


def build_shared_library(
    plan: FloatPlan,
    *,
    cache: Path | None = None,
    vector_width: int = DEFAULT_VECTOR_WIDTH,
    group_frames: int = DEFAULT_GROUP_FRAMES,
    inline_activations: bool = DEFAULT_INLINE_ACTIVATIONS,
    fp_contract: str = "fast",
    cc: str | None = None,
) -> SharedLibrary:
    """Generate the fp32 C of ``plan`` and return its shared library, compiling it only when
    the cache has none for this source, these flags, this compiler and this CPU."""
    if vector_width < 2:
        raise ValueError(
            f"the host engine needs the SIMD layout (vector_width >= 2), got {vector_width}"
        )
    if fp_contract not in ("fast", "off"):
        raise ValueError(f"fp_contract must be 'fast' or 'off', got {fp_contract!r}")
    cc = cc or find_compiler()
    if cc is None:
        raise ToolchainError(INSTALL_HINT)
    cflags = (*BASE_CFLAGS, *arch_flags(cc), f"-ffp-contract={fp_contract}")
    header, source = _generate(plan, vector_width, group_frames, inline_activations)
    digest = hashlib.sha256()
    for part in (header, source, " ".join(cflags), _compiler_identity(cc, arch_flags(cc))):
        digest.update(part.encode())
        digest.update(b"\0")
    key = digest.hexdigest()[:24]
    root = Path(cache) if cache is not None else cache_root()
    target = root / f"emg_model_{key}.so"
    if target.is_file():
        return SharedLibrary(target, key, False, cflags)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".build_{key}_") as tmp:
        work = Path(tmp)
        (work / "emg_model.h").write_text(header)
        (work / "emg_model.c").write_text(source)
        out = work / "emg_model.so"
        cmd = [cc, *cflags, "-I", str(work), str(work / "emg_model.c"), "-o", str(out), "-lm"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"building the C streaming engine failed ({' '.join(cmd)}):\n"
                f"{result.stderr[-4000:]}"
            )
        with open(out, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(out, target)  # atomic: readers see no library or the whole library
        fsync_dir(root)
    return SharedLibrary(target, key, True, cflags)


class _Loaded:
    """One ``dlopen``-ed library, shared by the engines of the same model (static state)."""

    def __init__(self, path: Path) -> None:
        self.cdll = ctypes.CDLL(str(path))
        self.step = self.cdll.emg_model_step
        self.step.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.step.restype = None
        self.reset = self.cdll.emg_model_reset
        self.reset.argtypes = []
        self.reset.restype = None
        self.cdll.emg_model_state.restype = ctypes.c_void_p
        self.cdll.emg_model_state_bytes.restype = ctypes.c_size_t
        self.state_ptr: int = self.cdll.emg_model_state()
        self.state_bytes: int = self.cdll.emg_model_state_bytes()
        self.owner: CStreamEngine | None = None


_LOADED: dict[Path, _Loaded] = {}


def _load(path: Path) -> _Loaded:
    if path not in _LOADED:
        _LOADED[path] = _Loaded(path)
    return _LOADED[path]


class CStreamEngine:
    """Stream raw EMG through the compiled step of ``model`` at batch 1.

    ``push(chunk (T, bands, electrodes))`` -> ``(frames, classes)`` float32 log-probabilities,
    the frames completed by this chunk (``(T + buffered) // stride`` of them). Raises
    :class:`UnsupportedModelError` for models the C generator does not implement and
    :class:`ToolchainError` when no C compiler is found.
    """

    def __init__(
        self,
        model: EMGModel,
        *,
        cache: Path | None = None,
        vector_width: int = DEFAULT_VECTOR_WIDTH,
        group_frames: int = DEFAULT_GROUP_FRAMES,
        inline_activations: bool = DEFAULT_INLINE_ACTIVATIONS,
        fp_contract: str = "fast",
        cc: str | None = None,
    ) -> None:
        cc = cc or find_compiler()
        if cc is None:  # before the plan: the clearest error first
            raise ToolchainError(INSTALL_HINT)
        was_training = model.training
        model.eval()
        try:
            plan = build_plan(model)
        finally:
            model.train(was_training)
        self.name = plan.name
        self.stride = plan.stride
        self.frame_shape = (plan.bands, plan.electrodes)
        self.classes = plan.num_classes
        self.library = build_shared_library(
            plan,
            cache=cache,
            vector_width=vector_width,
            group_frames=group_frames,
            inline_activations=inline_activations,
            fp_contract=fp_contract,
            cc=cc,
        )
        self._lib = _load(self.library.path)
        self._state = np.zeros(self._lib.state_bytes, np.uint8)  # this stream's saved state
        self._frame_size = self.stride * plan.bands * plan.electrodes
        self._pending = np.zeros(self._frame_size, np.float32)  # samples short of a frame
        self._filled = 0  # floats in _pending
        self.reset()

    def reset(self) -> None:
        """Start a new stream: zero state, no buffered samples."""
        self._claim()
        self._lib.reset()
        self._filled = 0

    def _claim(self) -> None:
        lib = self._lib
        if lib.owner is self:
            return
        if lib.owner is not None:  # keep the other stream's state for when it resumes
            ctypes.memmove(lib.owner._state.ctypes.data, lib.state_ptr, lib.state_bytes)
        ctypes.memmove(lib.state_ptr, self._state.ctypes.data, lib.state_bytes)
        lib.owner = self

    def push(self, chunk: Any) -> np.ndarray:
        """Feed ``chunk (T, bands, electrodes)`` (or ``(T, 1, bands, electrodes)``, NumPy or
        torch) and return the ``(frames, classes)`` log-probabilities it completes."""
        data = np.asarray(chunk, dtype=np.float32)
        if data.ndim == 4:
            if data.shape[1] != 1:
                raise ValueError(f"the C engine streams batch 1, got chunk shape {data.shape}")
            data = data[:, 0]
        if data.ndim != 3 or data.shape[1:] != self.frame_shape:
            raise ValueError(
                f"chunk must be raw EMG (T, {self.frame_shape[0]}, {self.frame_shape[1]}), "
                f"got shape {data.shape}"
            )
        flat = np.ascontiguousarray(data).reshape(-1)
        total = self._filled + flat.size
        frames = total // self._frame_size
        out = np.empty((frames, self.classes), np.float32)
        if frames == 0:
            self._pending[self._filled : total] = flat
            self._filled = total
            return out
        self._claim()
        step, out_ptr, row = self._lib.step, out.ctypes.data, 4 * self.classes
        start = 0
        if self._filled:
            start = self._frame_size - self._filled
            self._pending[self._filled :] = flat[:start]
            step(self._pending.ctypes.data, out_ptr)
            out_ptr += row
            frames -= 1
        ptr, size = flat.ctypes.data + 4 * start, 4 * self._frame_size
        for _ in range(frames):
            step(ptr, out_ptr)
            ptr += size
            out_ptr += row
        rest = flat.size - start - frames * self._frame_size
        self._pending[:rest] = flat[flat.size - rest :]
        self._filled = rest
        return out
