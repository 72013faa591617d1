"""Speed of the GRU / EGRU front-ends against the temporal-conv one (run by hand).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_recurrent_frontends.py \
        [--batch 32] [--samples 10000] [--device cpu] [--repeats 3]

A training window of the paper's recipe is 10,000 raw samples (4 s + 1 s padding), i.e. 2,500
encoder frames at 500 Hz with 72 features (TC_S4_small's MLP). For each front-end this prints
the median time of a forward pass in eval mode, of forward + backward in training mode, and
the EGRU recurrence with its hand-written backward against autograd through the same loop, and
the streaming cost of the whole composed model (gru_s4_small / egru_s4_small / tc_s4_small)
per 96-sample chunk (one output frame, 48 ms of EMG) at batch 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from emg2qwerty_ssm.models import build_model
from emg2qwerty_ssm.models.frontends import TemporalConvFrontend
from emg2qwerty_ssm.models.recurrent import (
    EGRUFrontend,
    EGRUScan,
    GRUFrontend,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from egru_reference import egru_scan_reference  # noqa: E402 (test-only reference loop)

CONF = Path(__file__).resolve().parent.parent / "conf"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=10_000, help="raw 2 kHz samples")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = args.samples // 4
    x = torch.randn(steps, args.batch, 72, device=device)
    print(f"device {device}, threads {torch.get_num_threads()}, input ({steps}, {args.batch}, 72)")
    frontends = {
        "tc": TemporalConvFrontend(72),
        "gru": GRUFrontend(72),
        "egru": EGRUFrontend(72),
    }
    for name, m in frontends.items():
        m.to(device)

        def fwd(m=m):
            with torch.no_grad():
                m.eval()(x)

        def fwd_bwd(m=m):
            m.train()
            m.zero_grad(set_to_none=True)
            m(x).square().mean().backward()

        t_f = timed(fwd, args.repeats, device)
        t_fb = timed(fwd_bwd, args.repeats, device)
        print(f"{name:5s} forward {t_f * 1e3:9.1f} ms   forward+backward {t_fb * 1e3:9.1f} ms")

    # The EGRU recurrence alone: hand-written BPTT (EGRUScan) vs autograd through the loop.
    h = 64
    gx = torch.randn(steps, args.batch, 3 * h, device=device, requires_grad=True)
    zeros = torch.zeros(args.batch, h, device=device)
    egru = frontends["egru"]
    keep = (torch.rand(steps, args.batch, h, device=device) > 0.1).to(gx.dtype)
    params = (egru.weight_hh, egru.bias_hh, egru.threshold)

    def scan_fast():
        ys, _, _ = EGRUScan.apply(gx, zeros, zeros, *params, keep, 1.0, 0.7, 1.0)
        ys.sum().backward()

    def scan_reference():
        ys, _ = egru_scan_reference(gx, zeros, zeros, *params, keep, 0.7, 1.0)
        ys.sum().backward()

    t_fast = timed(scan_fast, args.repeats, device)
    t_ref = timed(scan_reference, args.repeats, device)
    print(
        f"EGRU recurrence forward+backward: EGRUScan {t_fast * 1e3:.1f} ms, autograd "
        f"reference {t_ref * 1e3:.1f} ms ({t_ref / t_fast:.2f}x)"
    )

    with initialize_config_dir(str(CONF), version_base=None):
        for model_name in ("tc_s4_small", "gru_s4_small", "egru_s4_small"):
            model = build_model(compose(overrides=[f"+model={model_name}"]).model).eval()
            model.to(device)
            chunks = torch.randn(200, 96, 1, 2, 16, device=device)

            def stream(model=model, chunks=chunks):
                state = model.initial_state(1, device)
                with torch.no_grad():
                    for chunk in chunks:
                        _, state = model.forward_stream(chunk, state)

            per_chunk = timed(stream, args.repeats, device) / chunks.shape[0]
            print(f"{model_name:14s} streaming {per_chunk * 1e3:7.3f} ms per 96-sample chunk")


if __name__ == "__main__":
    main()
