"""DDP through Lightning: 2 CPU processes (gloo) run a couple of steps of the smoke config."""

from __future__ import annotations

import pytest
from trainer_helpers import cache_dir, run_cli

from emg2qwerty_ssm.results import read_results


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path, tmp_path_factory) -> None:
    run_dir = tmp_path / "ddp"
    proc = run_cli(
        [
            "debug=smoke",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=1",
            "evaluation.splits=[test]",
            f"hydra.run.dir={run_dir}",
        ],
        cache_dir(tmp_path_factory),
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output and "distributed_backend=gloo" in output
    # rank 1 was launched by Lightning as a second process in the same run dir ...
    assert (run_dir / "train_ddp_process_1.log").is_file()
    # ... and rank 0 alone evaluated and wrote the results
    results = read_results(run_dir)
    assert results["config"]["trainer"]["strategy"] == "ddp"
    assert results["config"]["trainer"]["devices"] == 2
    assert set(results["metrics"]) == {"test/paper/greedy", "test/session/greedy"}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
