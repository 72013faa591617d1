"""Streaming on raw 2 kHz EMG equals the offline forward; the models are causal
(docs/models.md#architecture)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import paper_model

from emg2qwerty_ssm.models import EMGModel, build_model
from emg2qwerty_ssm.models.summary import compose_model_config

PAPER = ("s4_large", "tc_s4_medium", "tc_s4_small")
ATOL = 1e-5


@pytest.fixture(scope="module", params=PAPER)
def model(request: pytest.FixtureRequest) -> EMGModel:
    return paper_model(request.param)


def _stream(model: EMGModel, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    state, outs, start = model.initial_state(x.shape[1]), [], 0
    for size in sizes:
        out, state = model.forward_stream(x[start : start + size], state)
        assert out.shape[1:] == (x.shape[1], 99)
        outs.append(out)
        start += size
    assert start == x.shape[0]
    return torch.cat(outs)


def _sizes(total: int, chunk: int) -> list[int]:
    return [min(chunk, total - a) for a in range(0, total, chunk)]


def test_chunked_stream_equals_offline(model: EMGModel) -> None:
    r = model.stride
    t = 9 * r + r // 3  # a remainder that never fills a frame
    x = torch.randn(t, 2, 2, 16)
    with torch.no_grad():
        offline = model(x)
        assert offline.shape[0] == 9
        rng = np.random.default_rng(0)
        random_sizes = []
        while sum(random_sizes) < t:
            random_sizes.append(int(min(rng.integers(0, 3 * r), t - sum(random_sizes))))
        for sizes in (_sizes(t, 37), _sizes(t, r), _sizes(t, 3 * r + 5), random_sizes):
            streamed = _stream(model, x, sizes)
            assert streamed.shape == offline.shape
            assert (streamed - offline).abs().max().item() <= ATOL, sizes[:5]


def test_sample_by_sample_stream_equals_offline(model: EMGModel) -> None:
    r = model.stride
    x = torch.randn(4 * r + 1, 1, 2, 16)
    with torch.no_grad():
        streamed = _stream(model, x, [1] * x.shape[0])
        assert (streamed - model(x)).abs().max().item() <= ATOL


def test_offline_prefix_gives_the_first_frames(model: EMGModel) -> None:
    r = model.stride
    x = torch.randn(10 * r, 2, 2, 16)
    with torch.no_grad():
        full = model(x)
        for t in (r - 1, 3 * r, 6 * r + r // 2 + 1):
            prefix = model(x[:t])
            assert prefix.shape == (t // r, 2, 99)
            if t >= r:
                assert (prefix - full[: t // r]).abs().max().item() <= ATOL


def test_future_input_does_not_change_past_frames(model: EMGModel) -> None:
    r = model.stride
    x = torch.randn(6 * r, 1, 2, 16)
    y = x.clone()
    y[4 * r :] += 5.0 * torch.randn_like(y[4 * r :])  # perturb only from frame 4 on
    with torch.no_grad():
        a, b = model(x), model(y)
    assert (a[:4] - b[:4]).abs().max().item() <= ATOL
    assert (a[4:] - b[4:]).abs().max().item() > 1e-3


def test_state_carries_history(model: EMGModel) -> None:
    """Restarting from a zero state mid-signal changes the output: the state is really used."""
    r = model.stride
    x = torch.randn(8 * r, 1, 2, 16)
    with torch.no_grad():
        offline = model(x)
        _, state = model.forward_stream(x[: 4 * r], model.initial_state(1))
        carried, _ = model.forward_stream(x[4 * r :], state)
        restarted, _ = model.forward_stream(x[4 * r :], model.initial_state(1))
    assert (carried - offline[4:]).abs().max().item() <= ATOL
    assert (restarted - offline[4:]).abs().max().item() > 1e-3


def test_stream_cli_decodes_like_offline_and_rejects_bad_arguments(tmp_path) -> None:  # noqa: ANN001
    import contextlib
    import io

    from emg2qwerty_ssm.decoding.greedy import CTCGreedyDecoder
    from emg2qwerty_ssm.stream import main, parse_args, stream

    torch.manual_seed(0)
    model = build_model(compose_model_config(["model=tc_s4_small"])).eval()
    emg = np.random.default_rng(0).normal(size=(30 * model.stride + 11, 2, 16)).astype("f4")
    out = io.StringIO()
    text, latencies = stream(model, emg, chunk=100, out=out)
    assert len(latencies) == -(-emg.shape[0] // 100)
    with torch.no_grad():
        offline = model(torch.from_numpy(emg).unsqueeze(1))[:, 0].numpy()
    expected = str(CTCGreedyDecoder().decode(offline, np.arange(offline.shape[0])))
    assert text == expected and out.getvalue() == text + "\n"
    for bad, match in (
        (["chunk_ms=48"], "choose a model"),
        (["model=tc_s4_small", "chunk_ms=0"], "chunk_ms must be > 0"),
        (["model=tc_s4_small", "foo=1"], "unknown argument 'foo'"),
        (["model=tc_s4_small", f"session={tmp_path / 'missing.hdf5'}"], "missing.hdf5"),
        (["model=tc_s4_small", f"checkpoint={tmp_path / 'none.pt'}"], "none.pt"),
    ):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            parse_args(bad)
    # a model that needs transforms the CLI does not apply is refused before streaming
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["model=tds_conv_ctc", "seconds=1"]) == 2
    assert "tds_conv_ctc takes log_spectrogram input at 125 Hz" in err.getvalue()
    assert parse_args(["model=tc_s4_small", "model.backbone.n_layers=2"]).model_overrides == [
        "model.backbone.n_layers=2"
    ]
