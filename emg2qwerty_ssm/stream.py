"""Stream a session through a model chunk by chunk and print the text as it is decoded.

    python -m emg2qwerty_ssm.stream model=tc_s4_small [checkpoint=PATH]
        [session=FILE.hdf5|synthetic] [chunk_ms=48] [seconds=SECONDS] [threads=1]
        [reference=false] [model.backbone.d_model=64 ...]

The model runs through :meth:`EMGModel.forward_stream` (the fast streaming engine, or today's
reference maths with ``reference=true``) at batch 1, exactly as a live device would feed it;
each chunk's log-probabilities go to the greedy CTC decoder and every new character is printed
at once. At the end: the decoded text, the prompted text where the session has one, and the
per-chunk latency p50 / p99 and real-time factor. ``checkpoint=`` loads trained weights (its
own model config wins over ``model=``); without one the weights are random, which shows the
speed but decodes noise. ``session=synthetic`` (default) generates one session of the demo
preset's held-out user in memory (nothing is written).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from emg2qwerty_ssm.models import EMGModel, build_model

_KEYS = ("model", "checkpoint", "session", "chunk_ms", "seconds", "threads", "reference")


@dataclass
class StreamArgs:
    """Parsed ``key=value`` arguments (``model.*`` overrides are passed on to Hydra)."""

    model: str | None = None
    checkpoint: Path | None = None
    session: str = "synthetic"
    chunk_ms: float = 48.0
    seconds: float | None = None
    threads: int = 1
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
        elif key == "reference":
            if value.lower() not in ("true", "false"):
                raise ValueError(f"reference must be true or false, got {value!r}")
            args.reference = value.lower() == "true"
        else:
            raise ValueError(f"unknown argument {key!r} (keys: {', '.join(_KEYS)}, model.*)")
    if args.model is None and args.checkpoint is None:
        raise ValueError("choose a model: model=<name of conf/model/> or checkpoint=PATH")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint={args.checkpoint}: file not found")
    if args.session != "synthetic" and not Path(args.session).is_file():
        raise FileNotFoundError(f"session={args.session}: file not found (or use synthetic)")
    return args


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


def stream(model: EMGModel, emg: np.ndarray, chunk: int, out=sys.stdout) -> tuple[str, list[float]]:  # noqa: ANN001
    """Feed ``emg (T, 2, 16)`` in chunks of ``chunk`` samples; print characters as they come.

    Returns the decoded text and the per-chunk latencies (model + decoder) in seconds.
    """
    from emg2qwerty_ssm.decoding.greedy import CTCGreedyDecoder

    decoder = CTCGreedyDecoder()
    x = torch.from_numpy(emg).unsqueeze(1)  # (T, 1, 2, 16)
    latencies: list[float] = []
    printed = 0
    text = ""
    frames = 0
    with torch.no_grad():
        state = model.initial_state(1)
        for start in range(0, x.shape[0], chunk):
            t0 = time.perf_counter()
            log_probs, state = model.forward_stream(x[start : start + chunk], state)
            if log_probs.shape[0]:
                times = (frames + np.arange(log_probs.shape[0])) * model.stride / 2000.0
                frames += log_probs.shape[0]
                text = str(decoder.decode(log_probs[:, 0].numpy(), times))
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
    emg, prompts = load_session(args.session)
    if args.seconds is not None:
        emg = emg[: int(args.seconds * model.input_rate_hz)]
    chunk = max(1, int(round(args.chunk_ms * model.input_rate_hz / 1000)))
    print(
        f"# {model.name}: {emg.shape[0] / model.input_rate_hz:.1f} s of EMG in chunks of "
        f"{chunk} samples ({args.chunk_ms:g} ms), {'reference' if args.reference else 'fast'} "
        f"path, {args.threads} thread(s), cpu_count={os.cpu_count()}, "
        f"loadavg={tuple(round(v, 2) for v in os.getloadavg())}"
    )
    from emg2qwerty_ssm.models.s4d_reference import reference_mode

    with reference_mode(args.reference):
        _, latencies = stream(model, emg, chunk)
    seconds = emg.shape[0] / model.input_rate_hz
    shown = [text for start, text in prompts if start < seconds]
    if shown:
        print(f"# prompted: {'⏎'.join(shown)}")
    lat = np.asarray(latencies) * 1e3
    rtf = (chunk / model.input_rate_hz) / (lat.mean() / 1e3)
    print(
        f"# {len(lat)} chunks: latency p50 {np.percentile(lat, 50):.3f} ms, "
        f"p99 {np.percentile(lat, 99):.3f} ms, max {lat.max():.3f} ms; "
        f"{rtf:.1f}x real time"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
