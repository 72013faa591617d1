"""Budget sweeps (sweeps/*.yaml, `+sweep=<name>`): every job of every sweep composes and
builds, names itself, and the `make pareto` sweep spans two orders of magnitude of MAC/s."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from emg2qwerty_ssm import CONFIG_DIR
from emg2qwerty_ssm.cost import config_card

SWEEPS_DIR = CONFIG_DIR.parent / "sweeps"
SWEEPS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))


def _jobs(name: str) -> list[tuple[list[str], object]]:
    """(overrides, composed job config) for every job of ``+sweep=name``."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        base = compose("config", overrides=[f"+sweep={name}"], return_hydra_config=True)
        params = base.hydra.sweeper.params or {}
        parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
        (batch,) = BasicSweeper.split_arguments(parsed, None)
        assert str(base.hydra.sweep.dir).startswith(f"multirun/sweeps/{name}/")
        return [(job, compose("config", overrides=[f"+sweep={name}", *job])) for job in batch]


def test_sweep_group_is_a_relative_link_to_sweeps() -> None:
    link = CONFIG_DIR / "sweep"
    assert link.is_symlink() and os.readlink(link) == "../sweeps"
    assert sorted(p.stem for p in link.glob("*.yaml")) == SWEEPS


@pytest.mark.parametrize("name", SWEEPS)
def test_every_job_composes_builds_and_names_itself(name: str) -> None:
    jobs = _jobs(name)
    assert len(jobs) >= 3
    cards = [config_card(cfg.model) for _, cfg in jobs]
    # results.json's "model" (and its config's seed) tell the jobs apart
    names = [(cfg.model.name, cfg.seed) for _, cfg in jobs]
    assert len(set(names)) == len(names), names
    macs = [c["macs_per_second"] for c in cards]
    assert all(m > 0 and math.isfinite(m) for m in macs)
    budgets = {(c["macs_per_second"], c["params"]) for c in cards}
    assert len(budgets) == len({n for n, _ in names})  # each model is a different budget
    if name == "pareto_synthetic":  # `make pareto`: >= 5 models over two orders of magnitude
        assert len(budgets) >= 5 and max(macs) / min(macs) >= 100, macs
        seeds = {s for _, s in names}
        assert len(seeds) >= 3 and len(jobs) == len(budgets) * len(seeds)  # every size x seed
        cfg = jobs[0][1]
        assert cfg.dataset.synthetic.preset == "demo" and cfg.trainer.max_epochs <= 40
        assert cfg.skip_finished  # a rerun skips the finished jobs


def test_sweep_files_are_global_packages() -> None:
    for path in [*SWEEPS_DIR.glob("*.yaml"), *SWEEPS_DIR.glob("*/*.yaml")]:
        assert Path(path).read_text().startswith("# @package _global_"), path


@pytest.mark.slow
def test_sweep_end_to_end_survives_a_failing_job(tmp_path: Path) -> None:
    """`+sweep=` through the real entry point on the tiny synthetic preset: job 0 trains and
    writes results.json, job 1 fails (mismatched strides), and the sweep finishes."""
    import json
    import subprocess
    import sys

    from emg2qwerty_ssm.pareto import collect

    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "emg2qwerty_ssm.train", "-m", "debug=smoke",
        "+sweep=budget_state", "+sweep/pareto_size=xxs", "model.backbone.d_state=8",
        "model.frontend.strides=[4,3,2],[4,3]", "trainer.max_epochs=1",
        "evaluation.splits=[val]", "evaluation.protocols=[paper]", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((sweep / "0_tc_s4_xxs" / "results.json").read_text())
    assert results["model"] == "tc_s4_xxs" and results["macs_per_second"] > 0
    assert "val/paper/greedy" in results["metrics"]
    failed = json.loads((sweep / "1_tc_s4_xxs" / "failed.json").read_text())
    assert "strides [4, 3]" in failed["error"]
    records, problems = collect([sweep], metric="val/paper/greedy")
    assert [r.name for r in records] == ["0_tc_s4_xxs"] and problems == []
