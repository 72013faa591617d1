"""The trainer end to end on the tiny synthetic preset: configs, smoke runs of every paper model,
fine-tuning, evaluation only, non-finite steps, bad data, results.json, the CLI contract."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf
from trainer_helpers import CONFIG_DIR, cache_dir, compose_cfg, run_cli

from emg2qwerty_ssm.results import REQUIRED_KEYS, read_results
from emg2qwerty_ssm.train import load_checkpoint_model, objective, train

# docs/models.md (measured on the seed's classes)
PAPER_MODELS = {
    "s4_large": (1_278_691, 192_336_062.5),
    "tc_s4_medium": (697_101, 32_637_375.0),
    "tc_s4_small": (388_437, 13_581_375.0),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return cache_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache) -> tuple[Path, dict]:
    """One debug=smoke run of TC_S4_small, shared by the tests that need a trained run."""
    run_dir = tmp_path_factory.mktemp("smoke_tc_s4_small")
    cfg = compose_cfg(["debug=smoke", "model=tc_s4_small"], run_dir, cache)
    return run_dir, train(cfg)


# ----------------------------------------------------------------------------- configs
def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


GROUPS = [
    "dataset",
    "transforms",
    "optimizer",
    "lr_scheduler",
    "trainer",
    "logger",
    "cluster",
    "experiment",
    "debug",
]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group) -> None:
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = compose_cfg([f"{group}={option}", "dataset.root=/data"])
        # Every option resolves completely (no dangling interpolation) apart from Hydra's own.
        OmegaConf.to_container(cfg, resolve=True)


def test_paper_experiments_select_model_and_split() -> None:
    cfg = compose_cfg(["experiment=s4_large_finetune", "dataset.root=/data"])
    assert cfg.model.name == "s4_large"
    assert cfg.user == "user0" and cfg.dataset.root == "/data"
    assert cfg.checkpoint.endswith("S4_large_generic/generic_checkpoint.ckpt")
    generic = compose_cfg(["experiment=tc_s4_medium_generic", "dataset.root=/data"])
    assert generic.user == "generic" and generic.checkpoint is None
    assert len(generic.dataset.test) == 16  # the 8 held-out users' test sessions


def test_transforms_pipelines_match_the_spec() -> None:
    raw = compose_cfg(["transforms=raw"]).transforms
    targets = [step["_target_"].rsplit(".", 1)[-1] for step in raw.train]
    assert targets == ["ToTensor", "ForEach", "TemporalAlignmentJitter"]
    assert raw.temporal_jitter.max_offset == 120
    assert [s["_target_"].rsplit(".", 1)[-1] for s in raw.test] == ["ToTensor"]
    spec = compose_cfg(["transforms=log_spectrogram"]).transforms
    assert [s["_target_"].rsplit(".", 1)[-1] for s in spec.val] == ["ToTensor", "LogSpectrogram"]
    assert spec.train[-1]["_target_"].endswith("SpecAugment")


def test_slurm_cluster_composes_with_the_submitit_launcher() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["cluster=slurm", "trainer=ddp", "trainer.devices=4"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.tasks_per_node == 4 and cfg.trainer.strategy == "ddp"


def test_multirun_glob_over_users_runs_one_job_per_user_and_survives_failures(
    tmp_path, cache
) -> None:
    # Real users on an empty root: every job fails validation, is recorded, the sweep goes on.
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "user=glob('user[01]')",
            "dataset=real",
            f"dataset.root={tmp_path / 'empty'}",
            f"hydra.sweep.dir={sweep}",
        ],
        cache,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = sorted(sweep.glob("*/failed.json"))
    # job dirs: <num>_<overrides> (dataset.root is left out of the name)
    names = [p.parent.name for p in failed]
    assert names == ["0_dataset=real,user=user0", "1_dataset=real,user=user1"]
    assert "DatasetError" in json.loads(failed[0].read_text())["error"]


# ----------------------------------------------------------------------------- smoke runs
def test_smoke_run_writes_complete_results(smoke_run) -> None:
    run_dir, results = smoke_run
    on_disk = read_results(run_dir)
    assert set(REQUIRED_KEYS) <= set(on_disk)
    assert on_disk["model"] == "tc_s4_small" and on_disk["user"] == "synth_user0"
    assert on_disk["params"] == PAPER_MODELS["tc_s4_small"][0]
    assert on_disk["macs_per_second"] == pytest.approx(PAPER_MODELS["tc_s4_small"][1])
    expected = {f"{s}/{p}/greedy" for s in ("val", "test") for p in ("paper", "session")}
    assert set(on_disk["metrics"]) == expected
    for values in on_disk["metrics"].values():
        assert set(values) == {"CER", "missing", "extra", "substituted", "IER", "DER", "SER"}
        assert values["CER"] == pytest.approx(values["IER"] + values["DER"] + values["SER"])
    assert on_disk["CER"] == on_disk["metrics"]["test/paper/greedy"]["CER"]
    assert Path(on_disk["checkpoint"]).is_file()
    assert Path(on_disk["checkpoint"]).name.startswith("val_")  # the best val/CER checkpoint
    assert on_disk["config"]["model"]["name"] == "tc_s4_small"
    assert len(on_disk["config_hash"]) == 16 and on_disk["wall_time_s"] > 0
    assert on_disk == json.loads(json.dumps(results))  # the return value is what was written


def test_smoke_run_logs_val_cer_both_protocols_and_cost(smoke_run) -> None:
    run_dir, _ = smoke_run
    with open(run_dir / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"train/loss", "val/CER", "val_continuous/CER", "train/skipped_steps"} <= logged
    assert {"val_0.ckpt", "last.ckpt"} <= {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert any(p.name.startswith("valcont_") for p in (run_dir / "checkpoints").iterdir())
    hparams = (run_dir / "csv" / "version_0" / "hparams.yaml").read_text()
    assert "cost/macs_per_second" in hparams and "cost/params" in hparams


@pytest.mark.slow
def test_egru_results_carry_the_activity_measured_in_the_evaluation(tmp_path, cache) -> None:
    overrides = [
        "debug=smoke",
        "model=egru_s4_small",
        "trainer.max_epochs=1",
        "evaluation.splits=[test]",
        "evaluation.protocols=[paper]",
    ]
    results = train(compose_cfg(overrides, tmp_path, cache))
    cost = results["cost"]
    dense, event = cost["macs_per_second"], cost["event_macs_per_second"]
    # The dense card counts every unit every step; the evaluation's measured activity (< 1
    # for a thresholded EGRU) must lower the recurrent part, never raise it.
    assert 0 < event < dense, (event, dense)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["s4_large", "tc_s4_medium"])
def test_smoke_run_of_every_paper_model(model, tmp_path, cache) -> None:
    # S4_large costs 14x TC_S4_small per second of EMG: evaluate the test split only.
    overrides = [
        "debug=smoke",
        f"model={model}",
        "trainer.max_epochs=1",
        "evaluation.splits=[test]",
        "evaluation.protocols=[paper]",
    ]
    results = train(compose_cfg(overrides, tmp_path, cache))
    params, macs = PAPER_MODELS[model]
    assert results["model"] == model and results["params"] == params
    assert results["macs_per_second"] == pytest.approx(macs)
    assert math.isfinite(results["CER"])


def test_curriculum_epoch_uses_longer_windows_and_smaller_batches(tmp_path, cache) -> None:
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                seen.append((trainer.current_epoch, tuple(batch["inputs"].shape[:2])))

    cfg = compose_cfg(["debug=smoke", "evaluation.splits=[test]"], tmp_path, cache)
    train(cfg, callbacks=[Spy()])
    (e0, (t0, n0)), (e1, (t1, n1)) = seen
    assert (e0, e1) == (0, 1)
    assert n0 == cfg.batch_size and n1 == cfg.datamodule.train_on_longer.batch_size
    # epoch 1 windows: 2 x 2000 samples + up to 500 of padding (minus up to 120 of jitter)
    assert t0 <= 2000 + 500 < 2 * 2000 - 120 <= t1


# ----------------------------------------------------------------------------- checkpoints
def test_evaluation_only_reproduces_the_runs_own_metrics(smoke_run, tmp_path, cache) -> None:
    run_dir, results = smoke_run
    cfg = compose_cfg(
        ["debug=smoke", "train=false", f"checkpoint={results['checkpoint']}"], tmp_path, cache
    )
    again = train(cfg)
    assert again["mode"] == "evaluate" and again["checkpoint"] == results["checkpoint"]
    assert again["metrics"] == results["metrics"]
    assert not (tmp_path / "checkpoints").exists()


def test_evaluation_only_needs_a_checkpoint(tmp_path, cache) -> None:
    with pytest.raises(ValueError, match="checkpoint=PATH"):
        train(compose_cfg(["debug=smoke", "train=false"], tmp_path, cache))


def test_fine_tuning_starts_from_the_checkpoint_weights(smoke_run, tmp_path, cache) -> None:
    _, results = smoke_run
    start, training_mode = {}, []

    class Capture(pl.Callback):
        def on_train_start(self, trainer, module):
            start.update({k: v.detach().clone() for k, v in module.model.state_dict().items()})

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                training_mode.append(all(m.training for m in module.model.modules()))

    cfg = compose_cfg(
        ["debug=smoke", f"checkpoint={results['checkpoint']}", "trainer.max_epochs=1"],
        tmp_path,
        cache,
    )
    tuned = train(cfg, callbacks=[Capture()])
    reference, _ = load_checkpoint_model(results["checkpoint"])
    for k, v in reference.state_dict().items():
        assert torch.equal(start[k], v), k
    assert training_mode == [True]  # dropout / BatchNorm train while fine-tuning
    assert Path(tuned["checkpoint"]).parent == tmp_path / "checkpoints"


def test_seed_format_checkpoint_evaluates_as_is(reference_dir, tmp_path, cache) -> None:
    seed_ckpt = reference_dir / "seed_checkpoint" / "TC_S4_small.ckpt"
    cfg = compose_cfg(
        ["debug=smoke", "train=false", f"checkpoint={seed_ckpt}", "evaluation.splits=[test]"],
        tmp_path,
        cache,
    )
    results = train(cfg)
    assert results["params"] == PAPER_MODELS["tc_s4_small"][0]
    assert set(results["metrics"]) == {"test/paper/greedy", "test/session/greedy"}


# ----------------------------------------------------------------------------- robustness
def test_non_finite_batches_are_skipped_without_touching_the_weights(tmp_path, cache) -> None:
    snapshots = {}

    class Poison(pl.Callback):
        """Batch 1 of epoch 0 gets NaN inputs; batch 2 a NaN gradient after backward."""

        batch_idx = -1

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.batch_idx = batch_idx
            if trainer.current_epoch == 0:
                snapshots[batch_idx] = _state(module)
                if batch_idx == 1:
                    batch["inputs"].fill_(float("nan"))

        def on_after_backward(self, trainer, module):
            if trainer.current_epoch == 0 and self.batch_idx == 2:
                next(module.parameters()).grad.fill_(float("inf"))

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.current_epoch == 0:
                snapshots[(batch_idx, "after")] = _state(module)

    cfg = compose_cfg(["debug=smoke", "model=tc_s4_small"], tmp_path, cache)
    results = train(cfg, callbacks=[Poison()])
    assert results["skipped_steps"] == 2
    for bad in (1, 2):
        before, after = snapshots[bad], snapshots[(bad, "after")]
        assert all(torch.equal(before[k], after[k]) for k in before), bad
    good_before, good_after = snapshots[0], snapshots[(0, "after")]
    assert not all(torch.equal(good_before[k], good_after[k]) for k in good_before)
    assert all(torch.isfinite(v).all() for v in snapshots[(2, "after")].values())


def _state(module) -> dict[str, torch.Tensor]:
    # parameters and buffers (BatchNorm running statistics) alike
    return {k: v.detach().clone() for k, v in module.model.state_dict().items()}


def test_bad_dataset_fails_before_training(tmp_path, cache) -> None:
    from emg2qwerty_ssm.validation import DatasetError

    root = tmp_path / "data"
    root.mkdir()
    (root / "broken.hdf5").write_bytes(b"not an hdf5 file")
    cfg = compose_cfg(
        [
            "debug=smoke",
            "dataset=real",
            f"dataset.root={root}",
            "user=user0",
        ],
        tmp_path / "run",
        cache,
    )
    with pytest.raises(DatasetError) as err:
        train(cfg)
    assert len(err.value.problems) == 14  # user0: 10 train + 2 val + 2 test sessions missing
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_synthetic_user_on_real_data_says_which_users_exist(tmp_path, cache) -> None:
    cfg = compose_cfg(["dataset=real", f"dataset.root={tmp_path}"], tmp_path / "run", cache)
    with pytest.raises(FileNotFoundError, match="user=user0 .. user7 or user=generic"):
        train(cfg)


def test_model_and_transforms_must_agree_on_the_input_kind(tmp_path, cache) -> None:
    cfg = compose_cfg(["debug=smoke", "transforms=log_spectrogram"], tmp_path, cache)
    with pytest.raises(ValueError, match="transforms=raw"):
        train(cfg)


def test_a_model_rate_other_than_the_transforms_is_refused(tmp_path, cache) -> None:
    # as a model file that set its own input_rate_hz would
    cfg = compose_cfg(["debug=smoke", "model.input_rate_hz=1000"], tmp_path, cache)
    with pytest.raises(ValueError, match=r"1000 Hz but the transforms produce 2000 Hz"):
        train(cfg)


def test_objective_looks_up_results_metrics_and_logged_values() -> None:
    results = {
        "CER": 12.0,
        "macs_per_second": 1e6,
        "metrics": {"val/paper/greedy": {"CER": 20.0, "SER": 5.0}},
        "logged": {"best/val/CER": 18.0, "val/CER": 19.0},
    }
    assert objective(results, "CER") == 12.0
    assert objective(results, "val/CER") == 18.0  # the best monitored value
    assert objective(results, "val/paper/greedy") == 20.0
    assert objective(results, "val/paper/greedy/SER") == 5.0
    assert objective(results, ["val/CER", "macs_per_second"]) == (18.0, 1e6)
    assert math.isnan(objective(results, "nope"))


# ----------------------------------------------------------------------------- CLI contract
@pytest.mark.slow
def test_cli_smoke_contract_needs_no_prepared_data(tmp_path, cache) -> None:
    run_dir = tmp_path / "cli"
    proc = run_cli(["debug=smoke", "model=tc_s4_small", f"hydra.run.dir={run_dir}"], cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(run_dir)
    assert results["params"] == PAPER_MODELS["tc_s4_small"][0]
    assert results["macs_per_second"] == pytest.approx(PAPER_MODELS["tc_s4_small"][1])
    assert math.isfinite(results["CER"])
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "test/paper/greedy" in proc.stdout  # the summary table


# ----------------------------------------------------------------------------- run_model.py
def _run_model_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "run_model", CONFIG_DIR.parent / "scripts" / "run_model.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_model_maps_the_paper_cli_onto_configs_and_checkpoints(tmp_path, reference_dir) -> None:
    rm = _run_model_module()
    ckpts = tmp_path / "checkpoints"
    ft = ckpts / "TC_S4_small_ft" / "user3_checkpoint.ckpt"
    ft.parent.mkdir(parents=True)
    ft.symlink_to(reference_dir / "seed_checkpoint" / "TC_S4_small.ckpt")
    args, extra = rm.parse_args(
        [
            "--user",
            "user3",
            "--model",
            "TC_S4_small",
            "--root_dataset",
            str(tmp_path),
            "--checkpoints_dir",
            str(ckpts),
            "--",
            "trainer=gpu",
        ]
    )
    overrides = rm.build_overrides(args, extra)
    assert {"dataset=real", "user=user3", "model=tc_s4_small", "train=false"} <= set(overrides)
    assert f"checkpoint={ft.resolve()}" in overrides and overrides[-1] == "trainer=gpu"
    # --train always starts from the generic checkpoint (absent here: a clear message)
    args, _ = rm.parse_args(
        [
            "--user",
            "user3",
            "--model",
            "TC_S4_small",
            "--root_dataset",
            str(tmp_path),
            "--checkpoints_dir",
            str(ckpts),
            "--train",
        ]
    )
    with pytest.raises(SystemExit, match="TC_S4_small_generic/generic_checkpoint.ckpt"):
        rm.build_overrides(args)
    args.from_scratch = True
    assert not any(o.startswith("checkpoint=") for o in rm.build_overrides(args))


def test_run_model_manifest_lists_files_and_catches_changed_ones(tmp_path) -> None:
    rm = _run_model_module()
    ckpt = tmp_path / "S4_large_ft" / "user0_checkpoint.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    manifest = json.loads(rm.write_manifest(tmp_path).read_text())
    (entry,) = manifest["checkpoints"]
    assert entry["model"] == "S4_large" and entry["kind"] == "ft" and entry["user"] == "user0"
    assert entry["bytes"] == 7 and "CER" not in entry
    ckpt.write_bytes(b"other weights")
    with pytest.raises(SystemExit, match="SHA-256"):
        rm._verify_manifest(tmp_path, ckpt)


@pytest.mark.slow
def test_run_model_evaluates_a_seed_checkpoint_end_to_end(tmp_path, reference_dir, cache) -> None:
    """The paper's CLI on a 'real' layout: synthetic files linked under user3's session names."""
    import os
    import subprocess
    import sys

    from emg2qwerty_ssm.data import load_split
    from emg2qwerty_ssm.synthetic import ensure_dataset

    tiny = ensure_dataset("tiny", 0, cache / "synthetic-tiny-seed0")
    synth = sorted(tiny.glob("*.hdf5"))
    root = tmp_path / "real"
    root.mkdir()
    real = load_split(CONFIG_DIR / "user" / "user3.yaml")
    for i, s in enumerate(x for part in real.values() for x in part):
        os.link(synth[i % len(synth)], root / f"{s['session']}.hdf5")
    ckpts = tmp_path / "checkpoints"
    (ckpts / "TC_S4_small_ft").mkdir(parents=True)
    os.link(
        reference_dir / "seed_checkpoint" / "TC_S4_small.ckpt",
        ckpts / "TC_S4_small_ft" / "user3_checkpoint.ckpt",
    )
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/run_model.py",
            "--user",
            "user3",
            "--model",
            "TC_S4_small",
            "--root_dataset",
            str(root),
            "--checkpoints_dir",
            str(ckpts),
            "--",
            "evaluation.splits=[test]",
            "logger=none",
            "progress_bar=none",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=CONFIG_DIR.parent,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(run_dir)
    assert results["mode"] == "evaluate" and results["user"] == "user3"
    assert results["params"] == PAPER_MODELS["tc_s4_small"][0]
    assert results["checkpoint"].endswith("TC_S4_small_ft/user3_checkpoint.ckpt")
    assert set(results["metrics"]) == {"test/paper/greedy", "test/session/greedy"}


@pytest.mark.slow
def test_wandb_logger_works_offline_without_an_account(tmp_path, cache, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_cfg(
        ["debug=smoke", "logger=wandb", "trainer.max_epochs=1", "evaluation.splits=[test]"],
        tmp_path,
        cache,
    )
    assert cfg.logger.wandb.offline is True
    train(cfg)
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    assert (tmp_path / "csv" / "version_0" / "metrics.csv").is_file()  # CSV alongside


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        ("val/CER", {"val/CER": "val_{epoch}", "val_continuous/CER": "valcont_{epoch}"}),
        ("val_continuous/CER", {"val_continuous/CER": "valcont_{epoch}"}),
    ],
)
def test_best_checkpoints_one_per_metric_whatever_is_monitored(
    monitor: str, expected: dict[str, str], tmp_path: Path
) -> None:
    """Monitoring the 80 s protocol used to add a second ModelCheckpoint on the same metric,
    which Lightning refuses at start-up ("more than one stateful callback")."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from emg2qwerty_ssm.trainer_setup import build_callbacks

    cfg = compose_cfg([f"monitor_metric={monitor}", "progress_bar=none"], run_dir=tmp_path)
    callbacks = build_callbacks(cfg, tmp_path, has_logger=False)
    best = {c.monitor: c.filename for c in callbacks if isinstance(c, ModelCheckpoint)}
    assert best == expected
    pl.Trainer(callbacks=callbacks, logger=False, enable_progress_bar=False)  # accepted
