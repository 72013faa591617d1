"""Stream a session through a model chunk by chunk and print the text as it is decoded.

    python -m emg2qwerty_ssm.stream model=tc_s4_small [checkpoint=PATH]
        [session=FILE.hdf5|synthetic] [chunk_ms=48] [seconds=SECONDS] [threads=1]
        [engine=auto|c|fused|torch] [reference=false] [model.backbone.d_model=64 ...]

The model streams at batch 1, exactly as a live device would feed it, through one of three
engines (``engine=``):

* ``c``: the compiled engine (``export/host_engine.py``): the microcontroller export's fp32 C
  built once as a shared library (cached) and called once per output frame;
* ``fused``: the fused NumPy engine of :meth:`EMGModel.forward_stream`;
* ``torch``: :meth:`EMGModel.forward_stream` stage by stage in PyTorch (``reference=true``
  runs today's reference maths this way).

``auto`` (default) takes ``c`` when a C compiler is found and the C generator supports the
model, else ``fused`` with a printed note; ``engine=c`` fails with the reason instead. The
header line names the engine that runs. Each chunk's log-probabilities go to the
greedy CTC decoder and every new character is printed at once. At the end: the decoded text,
the prompted text where the session has one, and the per-chunk latency p50 / p99 and real-
time factor. ``checkpoint=`` loads trained weights (its own model config wins over
``model=``); without one the weights are random, which shows the speed but decodes noise.
``session=synthetic`` (default) generates one session of the demo preset's held-out user in
memory (nothing is written).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np
import torch

from emg2qwerty_ssm.models import EMGModel, build_model

_KEYS = ("model", "checkpoint", "session", "chunk_ms", "seconds", "threads", "engine", "reference")
ENGINES = ("auto", "c", "fused", "torch")


@dataclass
class StreamArgs:
    """Parsed ``key=value`` arguments (``model.*`` overrides are passed on to Hydra)."""

    model: str | None = None
    checkpoint: Path | None = None
    session: str = "synthetic"
    chunk_ms: float = 48.0
    seconds: float | None = None
    threads: int = 1
    engine: str = "auto"
    reference: bool = False
    model_overrides: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> StreamArgs:
    """``key=value`` pairs -> :class:`StreamArgs`; a clear ``ValueError`` for bad input."""
    args = StreamArgs()
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"argument {item!r} is not key=value (keys: {', '.join(_KEYS)})")
        if key.startswith("model.") or key.startswith("model/") or key.startswith("~model"):
            args.model_overrides.append(item)
        elif key == "model":
            args.model = value
        elif key == "checkpoint":
            args.checkpoint = Path(value)
        elif key == "session":
            args.session = value
        elif key in ("chunk_ms", "seconds"):
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} is not a number") from None
            if number <= 0:
                raise ValueError(f"{key} must be > 0, got {value}")
            setattr(args, key, number)
        elif key == "threads":
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"threads must be a positive integer, got {value!r}")
            args.threads = int(value)
        elif key == "engine":
            if value not in ENGINES:
                raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {value!r}")
            args.engine = value
        elif key == "reference":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"reference must be true or false, got {value!r}")
            args.reference = value.lower() == "true"
        else:
            raise ValueError(f"unknown argument {key!r} (keys: {', '.join(_KEYS)}, model.*)")
    if args.reference and args.engine not in ("auto", "torch"):
        raise ValueError(
            f"reference=true runs today's PyTorch maths (engine=torch), not engine={args.engine}"
        )
    if args.model is None and args.checkpoint is None:
        raise ValueError("choose a model: model=<name of conf/model/> or checkpoint=PATH")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint={args.checkpoint}: file not found")
    if args.session != "synthetic" and not Path(args.session).is_file():
        raise FileNotFoundError(f"session={args.session}: file not found (or use synthetic)")
    return args


#: the rate of a session's raw EMG (emg2qwerty's 2 kHz bands; docs/format.md), which this
#: CLI feeds as it is: it applies no transforms, so it streams raw-input models at this rate
SESSION_RATE_HZ = 2000.0


def check_streamable(model: EMGModel) -> None:
    """Refuse, before any streaming, a model that does not take the session's raw EMG as is."""
    if model.input_kind != "raw" or model.input_rate_hz != SESSION_RATE_HZ:
        raise ValueError(
            f"model {model.name} takes {model.input_kind} input at {model.input_rate_hz:g} Hz; "
            f"this CLI feeds a session's raw EMG at {SESSION_RATE_HZ:g} Hz without transforms, "
            "so it streams models with input_kind=raw at that rate (transforms=raw)"
        )


def load_stream_model(args: StreamArgs) -> EMGModel:
    if args.checkpoint is not None:
        from emg2qwerty_ssm.models import load_model

        return load_model(args.checkpoint).eval()
    from emg2qwerty_ssm.models.summary import compose_model_config

    torch.manual_seed(0)
    cfg = compose_model_config([f"model={args.model}", *args.model_overrides])
    return build_model(cfg).eval()


def load_session(session: str) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """``(emg (T, 2, 16) float32, [(prompt start in s from the first sample, text)])`` of a
    session file or of a synthetic one."""
    if session == "synthetic":
        from emg2qwerty_ssm.synthetic.dataset import generate_session, plan_sessions
        from emg2qwerty_ssm.synthetic.params import preset_config

        config = preset_config("demo")
        data, attrs, _ = generate_session(config, 0, plan_sessions(config, 0)[0])
    else:
        from emg2qwerty_ssm.data import EMGSessionData

        with EMGSessionData(session) as s:
            data = s[:]
            attrs = {"prompts": s._attr(s.PROMPTS)}
    emg = np.stack([data["emg_left"], data["emg_right"]], axis=1).astype(np.float32)
    t0 = float(data["time"][0]) if len(data) else 0.0
    prompts: list[tuple[float, str]] = []
    raw = attrs.get("prompts")
    if isinstance(raw, (str, bytes)):
        try:
            items = json.loads(raw)
            prompts = [(float(p["start"]) - t0, p["payload"]["text"]) for p in items]
        except (ValueError, KeyError, TypeError):
            prompts = []  # prompts are only shown for comparison; a session may lack them
    return emg, prompts


class Streamer(Protocol):
    """An engine fed chunk by chunk: ``push((T, 2, 16)) -> (frames, classes)`` log-probs."""

    stride: int

    def push(self, chunk: np.ndarray) -> np.ndarray: ...


class TorchStreamer:
    """:meth:`EMGModel.forward_stream` (its ``stream_engine``: fused or torch) at batch 1."""

    def __init__(self, model: EMGModel) -> None:
        self.model, self.stride = model, model.stride
        self.state: object | None = None  # made at the first chunk, in the caller's mode

    def push(self, chunk: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            if self.state is None:
                self.state = self.model.initial_state(1)
            out, self.state = self.model.forward_stream(
                torch.from_numpy(chunk).unsqueeze(1), self.state
            )
        return out[:, 0].numpy()


def open_engine(model: EMGModel, engine: str, note: Callable[[str], None]) -> tuple[str, Streamer]:
    """The streamer for ``engine`` (auto|c|fused|torch) and the name of the engine that runs.

    ``auto`` tries the compiled C engine and falls back to ``fused`` with a ``note`` when no C
    compiler is found, the model has a block the C generator lacks, the build fails or the
    cache cannot be written; ``c`` raises instead.
    """
    if engine in ("auto", "c"):
        from emg2qwerty_ssm.export.host_engine import (
            CStreamEngine,
            ToolchainError,
            UnsupportedModelError,
        )

        try:
            t0 = time.perf_counter()
            c_engine = CStreamEngine(model)
            lib = c_engine.library
            how = "compiled" if lib.compiled else "cached"
            note(f"C engine: {how} library {lib.path} ({time.perf_counter() - t0:.1f} s)")
            return "c", c_engine
        except (ToolchainError, UnsupportedModelError, RuntimeError, OSError) as err:
            # no compiler, a block the generator lacks, a failed build or an unwritable cache
            if engine == "c":
                raise
            note(f"C engine unavailable, streaming with the fused engine: {err}")
            engine = "fused"
    model.stream_engine = engine
    return engine, TorchStreamer(model)


def stream(
    engine: Streamer | EMGModel,
    emg: np.ndarray,
    chunk: int,
    out: TextIO = sys.stdout,
    rate_hz: float = SESSION_RATE_HZ,
) -> tuple[str, list[float]]:
    """Feed ``emg (T, 2, 16)`` in chunks of ``chunk`` samples; print characters as they come.

    ``engine``: a :class:`Streamer` or a model (streamed by its ``forward_stream``);
    ``rate_hz``: the input's sample rate (the decoder's frame times). Returns the decoded text
    and the per-chunk latencies (model + decoder) in seconds.
    """
    from emg2qwerty_ssm.decoding.greedy import CTCGreedyDecoder

    streamer = TorchStreamer(engine) if isinstance(engine, EMGModel) else engine
    decoder = CTCGreedyDecoder()
    emg = np.ascontiguousarray(emg, dtype=np.float32)
    latencies: list[float] = []
    printed = 0
    text = ""
    frames = 0
    for start in range(0, emg.shape[0], chunk):
        t0 = time.perf_counter()
        log_probs = streamer.push(emg[start : start + chunk])
        if log_probs.shape[0]:
            times = (frames + np.arange(log_probs.shape[0])) * streamer.stride / rate_hz
            frames += log_probs.shape[0]
            text = str(decoder.decode(log_probs, times))
        latencies.append(time.perf_counter() - t0)
        if len(text) > printed:
            out.write(text[printed:])
            out.flush()
            printed = len(text)
    out.write("\n")
    return text, latencies


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    try:
        args = parse_args(argv)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model = load_stream_model(args)
    try:
        check_streamable(model)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    emg, prompts = load_session(args.session)
    if args.seconds is not None:
        emg = emg[: int(args.seconds * model.input_rate_hz)]
    chunk = max(1, int(round(args.chunk_ms * model.input_rate_hz / 1000)))
    from emg2qwerty_ssm.models.s4d_reference import reference_mode

    def note(message: str) -> None:
        print(f"# note: {message}", flush=True)

    try:
        engine_name, streamer = open_engine(model, "torch" if args.reference else args.engine, note)
    except (RuntimeError, ValueError, OSError) as err:  # engine=c unavailable: say why
        print(f"error: engine={args.engine}: {err}", file=sys.stderr)
        return 2
    path = "reference" if args.reference else "fast"
    print(
        f"# {model.name}: {emg.shape[0] / model.input_rate_hz:.1f} s of EMG in chunks of "
        f"{chunk} samples ({args.chunk_ms:g} ms), engine={engine_name} ({path} path), "
        f"{args.threads} thread(s), cpu_count={os.cpu_count()}, "
        f"loadavg={tuple(round(v, 2) for v in os.getloadavg())}"
    )
    with reference_mode(args.reference):
        _, latencies = stream(streamer, emg, chunk, rate_hz=model.input_rate_hz)
    seconds = emg.shape[0] / model.input_rate_hz
    shown = [text for start, text in prompts if start < seconds]
    if shown:
        print(f"# prompted: {'⏎'.join(shown)}")
    lat = np.asarray(latencies) * 1e3
    rtf = (chunk / model.input_rate_hz) / (lat.mean() / 1e3)
    print(
        f"# {len(lat)} chunks: latency p50 {np.percentile(lat, 50):.3f} ms, "
        f"p99 {np.percentile(lat, 99):.3f} ms, max {lat.max():.3f} ms; "
        f"{rtf:.1f}x real time (engine={engine_name})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
