"""Cortex-M export: footprint check and QEMU runs (skipped without the ARM toolchain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emg2qwerty_ssm.export.c_target import export_c
from emg2qwerty_ssm.export.mcu.build import ModelDoesNotFitError, toolchain_available
from tests.test_export_c import emg, tiny_model

MISSING = toolchain_available()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def test_int8_cortex_m4_under_qemu_matches_host_bit_for_bit(tmp_path: Path) -> None:
    model = tiny_model("tc", seed=11)
    report = export_c(
        model,
        tmp_path,
        target="cortex-m4",
        precision="int8",
        calibration=emg(96 * 40, seed=4),
        session_emg=emg(96 * 12, seed=5),
        qemu_seconds=0.48,  # 10 steps
    )
    assert report["qemu_board"] == "netduinoplus2"
    assert report["qemu_steps"] == 10
    assert report["qemu_max_abs_diff_vs_host"] == 0.0
    assert report["checks"] == {
        "int8_bit_exact_vs_numpy_reference": True,
        "qemu_matches_host": True,
    }
    assert report["fits"] == {"STM32F405": True, "STM32H743": True}
    # the tiny model does a few thousand MACs per step: the count must be in that range
    assert 5_000 < report["instructions_per_step"] < 500_000
    assert 0 < report["est_load"]["STM32F405"] < 0.05
    assert 0 < report["stack_bytes"] < 4096
    assert report["flash_bytes"] > report["library_flash_bytes"] > 0
    assert Path(report["artefacts"]["firmware_elf"]).is_file()


def test_fp32_cortex_m7_under_qemu_matches_host(tmp_path: Path) -> None:
    model = tiny_model("pools", seed=12)
    report = export_c(
        model,
        tmp_path,
        target="cortex-m7",
        precision="fp32",
        calibration=None,
        session_emg=emg(8 * 30, seed=6),
    )
    assert report["qemu_board"] == "mps2-an500"
    assert report["max_abs_diff"] <= 1e-4
    assert report["qemu_max_abs_diff_vs_host"] <= 1e-5
    assert report["checks"]["qemu_matches_host"]
    assert set(report["est_load"]) == {"STM32H743"}


def test_model_too_large_for_the_part_fails_clearly(tmp_path: Path) -> None:
    # TC_S4_small in fp32 needs ~1.5 MB of weights: more than the STM32F405's 1 MB flash
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose(config_name="config", overrides=["model=tc_s4_small"])
    from emg2qwerty_ssm.models.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with pytest.raises(
        ModelDoesNotFitError, match=r"does not fit STM32F405.*flash \d+ B > 1048576 B"
    ) as err:
        export_c(
            model,
            tmp_path,
            target="cortex-m4",
            precision="fp32",
            calibration=None,
            session_emg=emg(96 * 3),
        )
    assert "precision=int8" in str(err.value)
    assert err.value.report["fits"] == {"STM32F405": False, "STM32H743": True}
    assert not np.isnan(err.value.report["max_abs_diff"])
