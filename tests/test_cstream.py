"""Compiled streaming engine (export/host_engine.py): equal to the offline model, cached, reset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from emg2qwerty_ssm.export.cgen.plan import build_plan
from emg2qwerty_ssm.export.host_engine import (
    CStreamEngine,
    ToolchainError,
    UnsupportedModelError,
    build_shared_library,
    cache_root,
    find_compiler,
)
from emg2qwerty_ssm.models.model import EMGModel, build_model
from emg2qwerty_ssm.models.summary import compose_model_config

needs_cc = pytest.mark.skipif(find_compiler() is None, reason="needs a C compiler")

TINY = {
    "name": "tiny_tc",
    "encoder": {
        "_target_": "emg2qwerty_ssm.models.encoder.RotationInvariantEncoder",
        "mlp_features": [8],
        "input_mean_pooling": 4,
    },
    "frontend": {
        "_target_": "emg2qwerty_ssm.models.frontends.TemporalConvFrontend",
        "out_channels": [8, 12, 10],
        "strides": [4, 3, 2],
    },
    "backbone": {
        "_target_": "emg2qwerty_ssm.models.backbones.S4DBackbone",
        "d_model": 16,
        "n_layers": 2,
        "d_state": 8,
        "d_output": 12,
    },
}


def tiny_model(seed: int = 0) -> EMGModel:
    torch.manual_seed(seed)
    model = build_model(TINY)
    for module in model.modules():  # non-trivial BatchNorm statistics: tests the folding
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def paper_model(name: str) -> EMGModel:
    torch.manual_seed(0)
    return build_model(compose_model_config([f"model={name}"])).eval()


def emg(samples: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(samples, 2, 16, generator=torch.Generator().manual_seed(seed)) * 2.0


def offline(model: EMGModel, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(x.unsqueeze(1))[:, 0].numpy()


def stream(engine: CStreamEngine, x: torch.Tensor, chunk: int) -> np.ndarray:
    return np.concatenate([engine.push(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cstream_cache")


@needs_cc
@pytest.mark.parametrize(("name", "frames"), [("tiny", 30), ("tc_s4_small", 12), ("s4_large", 10)])
def test_streaming_equals_offline_for_any_chunk_length(name: str, frames: int, cache: Path) -> None:
    model = tiny_model() if name == "tiny" else paper_model(name)
    stride = model.stride
    x = emg(stride * frames + stride // 3)  # a tail that never fills a frame
    ref = offline(model, x)
    engine = CStreamEngine(model, cache=cache)
    for chunk in (stride, stride // 2, 2 * stride + 5, 37):
        engine.reset()
        out = stream(engine, x, chunk)
        assert out.shape == (frames, engine.classes), chunk
        np.testing.assert_allclose(out, ref[:frames], atol=1e-5, rtol=0, err_msg=f"chunk {chunk}")


@needs_cc
@pytest.mark.parametrize(
    ("vector_width", "group_frames", "fp_contract", "inline"),
    [(16, 4, "off", False), (8, 3, "fast", True)],
)
def test_other_layouts_and_contraction_equal_offline(
    vector_width: int, group_frames: int, fp_contract: str, inline: bool, cache: Path
) -> None:
    """Panel widths that pad the outputs, frame groups with a remainder (6 frames = 4 + 1 + 1
    in TC_S4_small's first convolution), FMA contraction on and off, libm or inline GELU."""
    model = paper_model("tc_s4_small")
    x = emg(96 * 8 + 50)
    engine = CStreamEngine(
        model,
        cache=cache,
        vector_width=vector_width,
        group_frames=group_frames,
        fp_contract=fp_contract,
        inline_activations=inline,
    )
    np.testing.assert_allclose(stream(engine, x, 70), offline(model, x), atol=1e-5, rtol=0)


@needs_cc
def test_reset_and_two_streams_through_one_library(cache: Path) -> None:
    model = tiny_model()
    x, other = emg(96 * 12, seed=3), emg(96 * 12, seed=4)
    a, b = CStreamEngine(model, cache=cache), CStreamEngine(model, cache=cache)
    assert a.library.path == b.library.path  # one library, one static state
    first = stream(a, x, 50)
    a.reset()
    np.testing.assert_array_equal(stream(a, x, 50), first)  # reset: same stream again
    a.reset()
    outs_a, outs_b = [], []
    for i in range(0, x.shape[0], 96):  # interleaved: each engine keeps its own state
        outs_a.append(a.push(x[i : i + 96]))
        outs_b.append(b.push(other[i : i + 96]))
    np.testing.assert_array_equal(np.concatenate(outs_a), first)
    np.testing.assert_allclose(np.concatenate(outs_b), offline(model, other), atol=1e-5, rtol=0)


@needs_cc
def test_library_cache_is_reused_and_rebuilt_when_weights_change(tmp_path: Path) -> None:
    model = tiny_model()
    first = build_shared_library(build_plan(model), cache=tmp_path)
    assert first.compiled and first.path.is_file() and first.path.parent == tmp_path
    stamp = first.path.stat().st_mtime_ns
    again = build_shared_library(build_plan(model), cache=tmp_path)
    assert not again.compiled and again.path == first.path
    assert again.path.stat().st_mtime_ns == stamp  # not rewritten
    with torch.no_grad():
        model.classifier.bias[0] += 0.25  # type: ignore[index]
    changed = build_shared_library(build_plan(model), cache=tmp_path)
    assert changed.compiled and changed.path != first.path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.path.name, changed.path.name]
    )  # no temp build directory left behind
    engine = CStreamEngine(model, cache=tmp_path)
    assert not engine.library.compiled
    x = emg(96 * 6)
    np.testing.assert_allclose(stream(engine, x, 96), offline(model, x), atol=1e-5, rtol=0)


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMG2QWERTY_SSM_CACHE", "/some/dir")
    assert cache_root() == Path("/some/dir/cstream")
    monkeypatch.delenv("EMG2QWERTY_SSM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert cache_root() == Path("/xdg/emg2qwerty_ssm/cstream")


def test_missing_compiler_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(ToolchainError, match="install gcc"):
        CStreamEngine(tiny_model())


@needs_cc
def test_unsupported_model_raises_naming_the_block(tmp_path: Path) -> None:
    model = paper_model("gru_s4_small")
    with pytest.raises(UnsupportedModelError, match="model.frontend"):
        CStreamEngine(model, cache=tmp_path)


@needs_cc
def test_bad_chunk_shape_is_rejected(cache: Path) -> None:
    engine = CStreamEngine(tiny_model(), cache=cache)
    with pytest.raises(ValueError, match="raw EMG"):
        engine.push(np.zeros((10, 16, 2), np.float32))
    with pytest.raises(ValueError, match="batch 1"):
        engine.push(np.zeros((10, 2, 2, 16), np.float32))


@needs_cc
def test_stream_cli_engine_choice(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    import io

    from emg2qwerty_ssm.stream import open_engine, parse_args, stream

    monkeypatch.setenv("EMG2QWERTY_SSM_CACHE", str(cache.parent / "cli_cache"))
    notes: list[str] = []
    model = tiny_model()
    name, engine = open_engine(model, "auto", notes.append)
    assert name == "c" and "compiled library" in notes[-1]
    x = emg(96 * 20 + 7).numpy()
    c_text, _ = stream(engine, x, 41, out=io.StringIO())
    fused_name, fused = open_engine(tiny_model(), "fused", notes.append)
    assert fused_name == "fused"
    assert stream(fused, x, 41, out=io.StringIO())[0] == c_text
    gru = paper_model("gru_s4_small")
    assert open_engine(gru, "auto", notes.append)[0] == "fused"
    assert "C engine unavailable" in notes[-1] and "GRUFrontend" in notes[-1]
    with pytest.raises(UnsupportedModelError):
        open_engine(gru, "c", notes.append)
    assert parse_args(["model=tc_s4_small", "engine=c"]).engine == "c"
    for bad, match in (
        (["model=tc_s4_small", "engine=gpu"], "engine must be one of"),
        (["model=tc_s4_small", "engine=c", "reference=true"], "reference=true"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_args(bad)


def test_failed_build_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    import shutil

    failing = shutil.which("false")
    if failing is None:
        pytest.skip("needs the 'false' command")
    with pytest.raises(RuntimeError, match="building the C streaming engine failed"):
        build_shared_library(build_plan(tiny_model()), cache=tmp_path, cc=failing)
    assert list(tmp_path.iterdir()) == []  # no library, no half-built temp directory
