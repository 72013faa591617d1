"""``python -m emg2qwerty_ssm.export checkpoint=PATH target=onnx|c|cortex-m4|cortex-m7
precision=fp32|int8 out=DIR`` (or ``model=NAME`` for random weights).

Defaults and every key: ``conf/export.yaml`` (``key=value`` overrides, OmegaConf syntax).
Writes the artefacts and ``DIR/report.json`` (atomically). The ONNX target is done here;
the C and Cortex-M targets are ``emg2qwerty_ssm.export.c_target.export_c``.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from emg2qwerty_ssm import CONFIG_DIR
from emg2qwerty_ssm.export.common import (
    PRECISIONS,
    TARGETS,
    ExportError,
    calibration_emg,
    count_params,
    fits,
    load_export_model,
    load_session,
    session_emg,
    synthetic_split,
    write_json_atomic,
)
from emg2qwerty_ssm.export.step import ExportableStep, UnsupportedBlockError, check_exportable
from emg2qwerty_ssm.models import EMGModel

CONFIG_FILE = CONFIG_DIR / "export.yaml"
#: files this command writes into ``out`` (replaced only with ``overwrite=true``)
OUR_FILES = ("report.json", "step.json", "model_fp32.onnx", "model_int8.onnx")
CALIBRATION_METHODS = ["minmax", "percentile"]  # quantize.quantize_int8


def load_config(argv: Sequence[str]) -> DictConfig:
    """``conf/export.yaml`` merged with ``key=value`` overrides; unknown keys are errors."""
    base = OmegaConf.load(CONFIG_FILE)
    OmegaConf.set_struct(base, True)
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ExportError(f"arguments must be key=value, got {bad}; see {CONFIG_FILE}")
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(list(argv)))
    except Exception as err:  # ConfigKeyError etc.: name the file that lists the keys
        raise ExportError(f"{err}; the keys are those of {CONFIG_FILE}") from None
    assert isinstance(cfg, DictConfig)
    return cfg


def validate(cfg: DictConfig) -> Path:
    """Check target, precision and out before any long work; return the output directory."""
    if cfg.target not in TARGETS:
        raise ExportError(f"target={cfg.target}: choose one of {list(TARGETS)}")
    if cfg.precision not in PRECISIONS:
        raise ExportError(f"precision={cfg.precision}: choose one of {list(PRECISIONS)}")
    if cfg.calibration_method not in CALIBRATION_METHODS:
        raise ExportError(
            f"calibration_method={cfg.calibration_method}: choose one of {CALIBRATION_METHODS}"
        )
    if OmegaConf.is_missing(cfg, "out"):
        raise ExportError("out=DIR is required (the directory for the artefacts and report)")
    out = Path(cfg.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"out={cfg.out} exists and is not a directory")
    if out.is_dir() and not cfg.overwrite:
        present = [name for name in OUR_FILES if (out / name).exists()]
        if present:
            raise ExportError(
                f"out={cfg.out} already holds {present}; choose another directory or pass "
                "overwrite=true to replace them (other files there are never touched)"
            )
    return out


def _onnx_target(
    cfg: DictConfig, model: EMGModel, step: ExportableStep, out: Path
) -> dict[str, Any]:
    from emg2qwerty_ssm.export.evaluate import measure_cer
    from emg2qwerty_ssm.export.onnx_target import OnnxStreamer, export_onnx
    from emg2qwerty_ssm.export.quantize import quantize_int8

    data = cfg.data
    paths = {"fp32": export_onnx(step, out / "model_fp32.onnx")}
    if cfg.precision == "int8":
        calibration = calibration_emg(cfg.calibration_seconds, data.preset, data.seed, data.user)
        paths["int8"] = quantize_int8(
            paths["fp32"],
            out / "model_int8.onnx",
            step.state_specs,
            step.stride,
            calibration,
            quantize_recurrence=cfg.quantize_recurrence,
            max_samples=cfg.calibration_samples,
            quantize_input_layer=cfg.quantize_input_layer,
            reduce_range=cfg.reduce_range,
            calibration_method=cfg.calibration_method,
        )
    streamers = {p: OnnxStreamer(path, step.state_specs, step.stride) for p, path in paths.items()}
    sessions = [load_session(p) for p in synthetic_split(data.preset, data.seed, data.user)]
    if not sessions:
        raise ExportError(f"synthetic {data.preset} split {data.user} has no test session")
    # parity on the whole test split: onnxruntime streaming vs the offline PyTorch model in
    # float64 (its float32 forward is itself ~1e-5 off for a trained model: it cannot be the
    # reference of a 1e-5 check); the float32 forward's own error is reported next to it
    model64 = copy.deepcopy(model).double().eval()
    diffs: dict[str, float] = {}
    torch_fp32_diff = 0.0
    seconds, wall = 0.0, 0.0
    for session in sessions:
        with torch.no_grad():
            reference = model64(session.emg.double().unsqueeze(1)).squeeze(1).numpy()
            torch_fp32 = model(session.emg.unsqueeze(1)).squeeze(1).numpy()
        torch_fp32_diff = max(torch_fp32_diff, float(np.abs(torch_fp32 - reference).max()))
        for precision, streamer in streamers.items():
            start = time.perf_counter()
            streamed = streamer.run(session.emg)
            if precision == cfg.precision:
                wall += time.perf_counter() - start
                seconds += session.emg.shape[0] / model.input_rate_hz
            diff = float(np.abs(streamed - reference).max())
            diffs[precision] = max(diffs.get(precision, 0.0), diff)
    report: dict[str, Any] = {
        "onnx_file": paths[cfg.precision].name,
        "onnx_bytes": paths[cfg.precision].stat().st_size,
        # exact sizes of what a runtime must hold; flash/RAM of a build come from the C targets
        "constant_bytes": _constant_bytes(paths[cfg.precision]),
        "state_bytes": 4 * sum(int(np.prod(s.shape)) for s in step.state_specs),
        "max_abs_diff": diffs[cfg.precision],
        "max_abs_diff_by_precision": diffs,
        "parity_reference": "offline PyTorch model in float64",
        "torch_fp32_max_abs_diff": torch_fp32_diff,
        "parity_seconds": seconds,
        "onnxruntime_real_time_factor": wall / seconds,
    }
    if cfg.cer:
        runs = {p: s.run for p, s in streamers.items()}
        report["cer"] = measure_cer(runs, sessions, cfg.lm_path, cfg.beam_size)
        report["cer_split"] = f"synthetic {data.preset} seed {data.seed} {data.user} test"
    return report


def _constant_bytes(path: Path) -> int:
    """Bytes of the ONNX file's initializers (weights and constants at their stored types)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    return sum(numpy_helper.to_array(i).nbytes for i in proto.graph.initializer)


def _c_target(cfg: DictConfig, model: EMGModel, out: Path) -> dict[str, Any]:
    try:
        from emg2qwerty_ssm.export.c_target import export_c
    except ImportError as err:
        raise ExportError(
            f"target={cfg.target} needs emg2qwerty_ssm.export.c_target (the C generator), "
            f"which this installation lacks ({err}); use target=onnx"
        ) from err
    data = cfg.data
    calibration = None
    if cfg.precision == "int8":
        calibration = calibration_emg(cfg.calibration_seconds, data.preset, data.seed, data.user)
    emg = session_emg(cfg.parity_seconds, data.preset, data.seed)
    return dict(
        export_c(
            model,
            out,
            target=cfg.target,
            precision=cfg.precision,
            calibration=calibration,
            session_emg=emg,
            quantize_input_layer=bool(cfg.quantize_input_layer),
        )
    )


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Do the export described by ``cfg``; return the report (also written to out/report.json)."""
    out = validate(cfg)
    model = load_export_model(cfg.checkpoint, cfg.model, cfg.seed, cfg.trust_pickle)
    check_exportable(model)  # before any long work
    out.mkdir(parents=True, exist_ok=True)
    step = ExportableStep(model)
    report: dict[str, Any] = {
        "target": cfg.target,
        "precision": cfg.precision,
        "model": model.name,
        "source": str(cfg.checkpoint) if cfg.checkpoint else f"random init (seed {cfg.seed})",
        "params": count_params(model),
        "stride": step.stride,
        "input_shape": list(step.input_shape),
        "max_abs_diff": None,
        "flash_bytes": None,
        "ram_bytes": None,
        "stack_bytes": None,
        "instructions_per_step": None,
        "cer": {},
    }
    write_json_atomic(
        out / "step.json",
        {
            "stride": step.stride,
            "input_shape": list(step.input_shape),
            "num_classes": step.num_classes,
            "state": [{"name": s.name, "shape": list(s.shape)} for s in step.state_specs],
        },
    )
    if cfg.target == "onnx":
        report.update(_onnx_target(cfg, model, step, out))
    else:
        report.update(_c_target(cfg, model, out))
    report["fits"] = report.get("fits") or fits(report["flash_bytes"], report["ram_bytes"])
    write_json_atomic(out / "report.json", report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(argv)
        report = run_export(cfg)
    # ExportError and CheckpointError are ValueErrors; programming errors keep their traceback
    except (ValueError, UnsupportedBlockError, FileNotFoundError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    summary = {k: report.get(k) for k in ("target", "precision", "params", "max_abs_diff")}
    print(f"export: wrote {Path(cfg.out) / 'report.json'}: {summary}, cer {report.get('cer')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
