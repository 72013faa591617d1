"""Training, fine-tuning and evaluation entry point (``python -m emg2qwerty_ssm.train``).

``train(cfg) -> dict`` is a plain function (tests, sweeps and scripts call it); :func:`main` is
the thin Hydra wrapper over ``conf/config.yaml``. One run:

1. resolve the dataset (synthetic presets are generated on first use), read the split and
   validate it (:class:`~emg2qwerty_ssm.validation.DatasetError` before anything trains);
2. build the model (from ``cfg.model``, or from ``checkpoint=PATH``: project or seed format)
   and check its ``input_kind`` and ``input_rate_hz`` against the transforms;
3. fit with Lightning (``train=true``): checkpoints on ``val/CER`` and ``val_continuous/CER``
   plus ``last.ckpt``; a restarted run with the same run dir resumes from ``last.ckpt``;
4. reload the best ``val/CER`` checkpoint and evaluate every split x protocol on one process;
5. write ``<run dir>/results.json`` atomically and print a summary table.

With ``skip_finished=true`` a run dir that already holds a complete ``results.json`` of the
same config returns it at once ("already finished"), so a rerun sweep skips its finished jobs.

The pieces live beside it: the dataset and split (:mod:`emg2qwerty_ssm.run_data`,
:mod:`emg2qwerty_ssm.data.splits`), the Trainer (:mod:`emg2qwerty_ssm.trainer_setup`), the
final evaluation and report (:mod:`emg2qwerty_ssm.final_eval`) and the results file with its
key grammar (:mod:`emg2qwerty_ssm.results`). See docs/training.md for the commands and the run
directory layout.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from emg2qwerty_ssm import CONFIG_DIR, logs
from emg2qwerty_ssm.atomic_io import atomic_write_text
from emg2qwerty_ssm.config_checks import check_config_values
from emg2qwerty_ssm.data.splits import check_split, resolve_split, session_format_of
from emg2qwerty_ssm.final_eval import build_results, eval_device, evaluate_all, print_summary
from emg2qwerty_ssm.host_memory import retain_freed_memory
from emg2qwerty_ssm.models.snn import reset_activity  # every event-based stage (EGRU, SNN)
from emg2qwerty_ssm.paths import resolve_user_path
from emg2qwerty_ssm.results import FAILED_FILE, RESULTS_FILE, objective, write_results
from emg2qwerty_ssm.resume import (
    LAST_NAME,
    AtomicCheckpointIO,
    TrainingClock,
    check_architecture,
    choose_resume_checkpoint,
)
from emg2qwerty_ssm.run_data import prepare_dataset
from emg2qwerty_ssm.run_dir import claim_run_dir, finished_results
from emg2qwerty_ssm.trainer_setup import CHECKPOINT_DIR_NAME, build_loggers, build_trainer

if TYPE_CHECKING:
    from emg2qwerty_ssm.models.model import EMGModel

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- run dir, data
def resolve_run_dir(cfg: DictConfig) -> Path:
    """``cfg.run_dir`` if set, else Hydra's output dir, else ``outputs/<timestamp>``."""
    if cfg.get("run_dir"):
        return Path(str(cfg.run_dir)).expanduser().resolve()
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir).resolve()
    except ValueError:  # not inside a Hydra app (plain compose)
        return (Path("outputs") / time.strftime("%Y-%m-%d/%H-%M-%S")).resolve()


# ---------------------------------------------------------------------------- models
def load_checkpoint_model(path: str | os.PathLike[str]) -> tuple[EMGModel, dict | None]:
    """A model and its ``model`` config from a checkpoint: this trainer's Lightning checkpoints,
    the project's own format or the seed's Lightning format (``emg2qwerty_ssm.load_model``,
    which unpickles with ``weights_only=True`` and maps seed weights)."""
    from emg2qwerty_ssm.models.checkpoints import load_model

    path = resolve_user_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    model = load_model(path)
    model_cfg = getattr(model, "config", None)
    return model, (dict(model_cfg) if model_cfg else None)


def check_input_kind(model_kind: str | None, cfg: DictConfig) -> None:
    """The model's expected input (raw EMG or log-spectrogram) must match the transforms."""
    transforms_kind = cfg.transforms.get("kind")
    if model_kind and transforms_kind and model_kind != transforms_kind:
        raise ValueError(
            f"model {_model_name(cfg)!r} expects input_kind={model_kind!r} but the transforms "
            f"produce {transforms_kind!r}: choose transforms={model_kind}"
        )


def check_input_rate(model_rate: float | None, cfg: DictConfig) -> None:
    """The model reads at the rate the transforms produce (``transforms.output_rate_hz``).

    The full config sets the model's rate from the transforms; this catches a model file or a
    checkpoint that brings another rate (its cost, latency and streaming figures would be
    wrong)."""
    transforms_rate = cfg.transforms.get("output_rate_hz")
    if model_rate and transforms_rate and float(model_rate) != float(transforms_rate):
        raise ValueError(
            f"model {_model_name(cfg)!r} reads input at {float(model_rate):g} Hz but the "
            f"transforms produce {float(transforms_rate):g} Hz (transforms.output_rate_hz): "
            "the rate belongs to the transforms; drop input_rate_hz from the model file "
            "or choose transforms of that rate"
        )


def _model_name(cfg: DictConfig, model: torch.nn.Module | None = None) -> str:
    name = getattr(model, "name", None) if model is not None else None
    return str(name or cfg.model.get("name", "model"))


def build_module(cfg: DictConfig) -> Any:
    """The Lightning module: fresh from ``cfg.model`` or initialised from ``cfg.checkpoint``.

    With a checkpoint the architecture is the checkpoint's (as the seed does); optimizer,
    scheduler and decoder always come from the current config.
    """
    from emg2qwerty_ssm.lightning_module import EMGModule

    common = {
        "optimizer": cfg.optimizer,
        "lr_scheduler": cfg.lr_scheduler,
        "decoder": cfg.decoder,
    }
    if cfg.get("checkpoint"):
        model, model_cfg = load_checkpoint_model(cfg.checkpoint)
        ckpt_name = getattr(model, "name", None)
        if ckpt_name and ckpt_name != cfg.model.get("name"):
            log.warning(
                "checkpoint %s holds model %r; using its architecture (model=%s ignored)",
                cfg.checkpoint,
                ckpt_name,
                cfg.model.get("name"),
            )
        # load_model returns eval mode; Lightning keeps a module's mode, so switch back
        # (dropout and BatchNorm statistics must train when fine-tuning).
        model.train()
        log.info("initialised from %s", resolve_user_path(cfg.checkpoint))
        if model_cfg is None:
            model_cfg = dict(OmegaConf.to_container(cfg.model, resolve=True))  # type: ignore[arg-type]
        return EMGModule(model_cfg=model_cfg, model=model, **common)
    return EMGModule(model_cfg=cfg.model, **common)


# ---------------------------------------------------------------------------- datamodule
def build_datamodule(cfg: DictConfig, root: Path, split: Mapping[str, Any]) -> Any:
    """``cfg.datamodule`` (a ``_target_`` node, conf/datamodule/) with the run's root, split,
    session format (``cfg.dataset.format``) and transform pipelines
    (``cfg.transforms.train/val/test``)."""
    from hydra.utils import instantiate

    from emg2qwerty_ssm.transforms import Compose

    def pipeline(name: str) -> Any:
        steps = cfg.transforms.get(name)
        return Compose(list(instantiate(steps))) if steps is not None else None

    # _partial_: the run's objects are passed to the constructor, not merged into the config
    # (OmegaConf would turn the dataclass transforms into config nodes).
    make = instantiate(cfg.datamodule, _partial_=True, _convert_="all")
    return make(
        root=root,
        split=split,
        session_format=session_format_of(cfg),
        train_transform=pipeline("train"),
        val_transform=pipeline("val"),
        test_transform=pipeline("test"),
    )


# ---------------------------------------------------------------------------- cost
def model_cost(model: torch.nn.Module, name: str) -> dict[str, Any]:
    """The model card (emg2qwerty_ssm.cost); params only if the model cannot report its cost."""
    from emg2qwerty_ssm import cost

    try:
        return cost.model_card(model, name=name)
    except (NotImplementedError, AttributeError, ValueError) as err:
        log.warning("no compute cost for %s (%s); reporting parameters only", name, err)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"params": params, "macs_per_second": None, "cost_error": str(err)}


def _log_hyperparams(loggers: list[Any], cfg: DictConfig, card: Mapping[str, Any]) -> None:
    from emg2qwerty_ssm.cost import card_metrics

    flat = card_metrics({k: v for k, v in card.items() if v is not None})
    config = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams({"config": config, **flat})


# ---------------------------------------------------------------------------- evaluation
# ---------------------------------------------------------------------------- the run
def train(cfg: DictConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Run training and/or evaluation as configured; returns the ``results.json`` content.

    ``callbacks`` are extra Lightning callbacks (e.g. a pruning callback from a sweeper).
    On DDP ranks other than 0 the return value is an empty dict (rank 0 evaluates and writes).
    """
    import lightning.pytorch as pl

    start = time.time()
    check_config_values(cfg)  # e.g. evaluation.batch_size=0, optimizer.lr=fast: named now

    logs.setup_run_logging()
    logs.warn_unused_gpu(cfg.trainer)
    retain_freed_memory()  # no page faults for each step's activations (host_memory.py)
    if cfg.get("matmul_precision"):  # TF32 matmuls on Ampere+ GPUs ("high"); docs/training.md
        torch.set_float32_matmul_precision(str(cfg.matmul_precision))
    run_dir = resolve_run_dir(cfg)
    if cfg.get("skip_finished"):
        done = finished_results(run_dir, cfg)
        if done is not None:
            log.info("already finished: %s", run_dir / RESULTS_FILE)
            return done
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(int(cfg.seed), workers=True)

    root = prepare_dataset(cfg)
    split, split_source = resolve_split(cfg, root)
    check_split(root, split, split_source, cfg)  # before anything is built or trained
    if not cfg.train and not cfg.get("checkpoint"):
        raise ValueError("train=false evaluates a trained model: also pass checkpoint=PATH")

    history = claim_run_dir(run_dir, cfg)  # a run dir belongs to one config (or explicit override)
    module = build_module(cfg)
    check_input_kind(getattr(module.model, "input_kind", None) or cfg.model.get("input_kind"), cfg)
    check_input_rate(getattr(module.model, "input_rate_hz", None), cfg)
    datamodule = build_datamodule(cfg, root, split)
    name = _model_name(cfg, module.model)
    card = model_cost(module.model, name)
    logs.log_model_card(name, card)

    loggers = build_loggers(cfg, run_dir)
    trainer = None
    checkpoint = str(resolve_user_path(cfg.checkpoint)) if cfg.get("checkpoint") else None
    logged: dict[str, float] = {}
    clock = TrainingClock(started=start)  # wall time carried across resumes in the checkpoints
    if cfg.train:
        trainer = build_trainer(cfg, run_dir, loggers, [*callbacks, logs.ValidationReport(), clock])
        if trainer.is_global_zero:
            _log_hyperparams(loggers, cfg, card)
        last = run_dir / CHECKPOINT_DIR_NAME / LAST_NAME
        resume_from = None
        if cfg.get("resume", True):
            resume_from = choose_resume_checkpoint(run_dir / CHECKPOINT_DIR_NAME)
        if resume_from is not None:
            step = check_architecture(resume_from, module)
            log.info("resuming from %s (global step %d)", resume_from, step)
        ckpt_path = str(resume_from) if resume_from is not None else None
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if not trainer.is_global_zero:
            return {}
        logged = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v)}
        best_cb = trainer.checkpoint_callback
        best = getattr(best_cb, "best_model_path", "") if best_cb is not None else ""
        if best and Path(best).is_file():
            module.load_state_dict(AtomicCheckpointIO().load_checkpoint(best)["state_dict"])
            checkpoint = str(Path(best).resolve())
            score = best_cb.best_model_score
            if score is not None:
                logged[f"best/{cfg.monitor_metric}"] = float(score)
            log.info("best %s checkpoint: %s", cfg.monitor_metric, best)
        elif last.is_file():
            checkpoint = str(last.resolve())
    elif loggers:
        _log_hyperparams(loggers, cfg, card)

    # Event-based blocks (EGRU, SNN) measure their activity while they run: count only the final
    # evaluation, then recompute the card so its activity-weighted MAC/s come from this data.
    reset_activity(module.model)
    metrics = evaluate_all(cfg, module, datamodule, eval_device(cfg, trainer), run_dir)
    card = model_cost(module.model, name)
    for lg in loggers:
        lg.log_metrics({f"eval/{k}/{m}": v for k, d in metrics.items() for m, v in d.items()})
        lg.save()

    results = build_results(
        cfg, name, card, metrics, checkpoint, logged, split_source, root, module
    )
    results["wall_time_s"] = round(clock.elapsed_s(), 3)  # every process whose work was kept
    results["wall_time_process_s"] = round(time.time() - start, 3)
    if history:
        results["config_history"] = history
    write_results(run_dir, results)
    # a failed.json of an earlier attempt in this dir is stale now (sweep summaries list it)
    (run_dir / FAILED_FILE).unlink(missing_ok=True)
    print_summary(results, run_dir)
    return results


# ---------------------------------------------------------------------------- Hydra
def _failed(cfg: DictConfig, err: BaseException) -> Any:
    """Multirun: a failing job is recorded (failed.json) and reported as NaN to the sweeper."""
    import json
    import traceback

    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(  # like results.json: never a truncated file
        run_dir / FAILED_FILE,
        json.dumps({"error": repr(err), "traceback": traceback.format_exc()}, indent=2),
    )
    key = cfg.get("optimized_metric")
    if key is not None and not isinstance(key, str):
        return tuple(math.nan for _ in key)
    return math.nan


def _interruption(err: BaseException) -> BaseException | None:
    """The SystemExit / KeyboardInterrupt that ``err`` was raised under while it unwound, if any.

    A preemption handler (submitit's on SLURM) requeues the job and exits with SystemExit; if
    that lands inside ``torch.save``, torch turns it into a RuntimeError. Recording that as a
    failed job would report success to the launcher and lose the requeue, and letting the
    RuntimeError escape makes submitit write it as the job's result, which the sweep then
    reads as a failure before the requeued job has run; the exit itself is re-raised instead.
    """
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, (SystemExit, KeyboardInterrupt)):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _hydra_task(cfg: DictConfig) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = train(cfg)
    except Exception as err:
        stop = _interruption(err)
        if stop is not None:
            raise stop from err
        if not multirun:
            raise
        log.exception("job failed; the sweep continues")
        return _failed(cfg, err)
    if not results:  # DDP rank > 0
        return None
    return objective(results, cfg.get("optimized_metric"))


def main() -> Any:
    """Console script ``emg2qwerty-ssm-train``: the Hydra app over conf/config.yaml."""
    import hydra

    logs.install_filters()  # before the sweeper's first trial
    app = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")(
        _hydra_task
    )
    return app()


if __name__ == "__main__":
    main()
