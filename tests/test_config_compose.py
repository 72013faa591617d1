"""Configs compose to the same values after the conf/ restructuring.

``tests/config_snapshots/composed.json`` holds, for each override list below, the resolved
config (all but ``hydra``) as the configs composed before conf/ was reorganised (the nine
experiment presets, eight synthetic user copies, four trainer copies, ...). The test composes
the same overrides today and compares every node. Keys added or dropped on purpose since
are listed in ``CHANGED`` and left out of the comparison; ``NEW_SPELLINGS`` are today's
spellings of snapshot cases (e.g. ``experiment=personalized model=tc_s4_medium``).

Regenerate (only when a change of values is intended, and say so in the commit):
    .venv/bin/python tests/test_config_compose.py --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from emg2qwerty_ssm import CONFIG_DIR

SNAPSHOT = Path(__file__).parent / "config_snapshots" / "composed.json"
FIXED = ["paths.data_dir=/DATA", "paths.cache_dir=/CACHE"]
REAL = ["dataset.root=/DATA/emg2qwerty"]

CASES: dict[str, list[str]] = {
    "default": [],
    "demo": ["experiment=demo"],
    "demo_beam": ["experiment=demo", "train=false", "decoder=ctc_beam"],
    "smoke": ["debug=smoke"],
    "synth_user3": ["user=synth_user3"],
    "synth_generic_full": ["dataset=synthetic_full", "user=synth_generic"],
    "tiny_user7": ["dataset=synthetic_tiny", "user=synth_user7"],
    "real_user3": ["dataset=real", *REAL, "user=user3"],
    "real_generic": ["dataset=real", *REAL, "user=generic"],
    "tds": ["model=tds_conv_ctc", "transforms=log_spectrogram"],
    "trainer_cpu": ["trainer=cpu"],
    "trainer_gpu": ["trainer=gpu"],
    "trainer_ddp": ["trainer=ddp"],
    "pareto_s": ["+sweep=pareto_synthetic", "sweep/pareto_size=s"],
    "pareto_medium": ["+sweep=pareto_synthetic", "sweep/pareto_size=tc_s4_medium"],
    "budget_width": ["+sweep=budget_width"],
    "frontend_family": ["+sweep=frontend_family", "+sweep/frontend=gru"],
}
for _model in ("s4_large", "tc_s4_small", "tc_s4_medium"):
    for _regime in ("generic", "personalized", "finetune"):
        _user = [] if _regime == "generic" else ["user=user3"]
        CASES[f"{_model}_{_regime}"] = [f"experiment={_model}_{_regime}", *REAL, *_user]
for _model in ("egru_s4_small", "gru_s4_small", "snn_s4_small"):
    CASES[_model] = [f"model={_model}"]

#: datamodule keys that are interpolations of run-level keys
DATAMODULE_LINKS = {
    "batch_size": "batch_size",
    "num_workers": "num_workers",
    "chunk_length": "evaluation.chunk_length",
    "eval_batch_size": "evaluation.batch_size",
}

#: today's spelling -> the snapshot case it must equal
NEW_SPELLINGS: dict[str, tuple[str, list[str]]] = {
    "synth_split": ("synth_user3", ["user=synth", "synth_split=user3"]),
    "synth_split_generic": (
        "synth_generic_full",
        ["dataset=synthetic_full", "user=synth", "synth_split=generic"],
    ),
    "regime_generic": ("s4_large_generic", ["experiment=generic", "model=s4_large", *REAL]),
    "regime_personalized": (
        "tc_s4_medium_personalized",
        ["experiment=personalized", "model=tc_s4_medium", "user=user3", *REAL],
    ),
    "regime_finetune": (
        "tc_s4_small_finetune",
        [
            "experiment=finetune",
            "model=tc_s4_small",
            "checkpoint=checkpoints/TC_S4_small_generic/generic_checkpoint.ckpt",
            "user=user3",
            *REAL,
        ],
    ),
    "tds_own_transforms": ("tds", ["model=tds_conv_ctc"]),
}

#: dotted keys added or dropped on purpose since the snapshot (left out of the comparison):
#: the synthetic split name and the dataset's split directory (conf/user/synth.yaml); the
#: front-end's kernel_sizes, which must equal strides and defaults to them; the datamodule's
#: _target_ and the keys it now reads by interpolation (checked below); the transforms' output
#: rate, which model.input_rate_hz (still compared) now comes from; skip_finished and
#: elastic_threads (how a run executes: false by default, true in the pareto sweep, the latter
#: for S4_large only). Values changed on purpose are edited
#: in the snapshot itself: pareto_medium's optimizer.lr 3e-3 -> 1e-3 (the sweep's lr for the
#: paper's 8-layer models, docs/benchmark.md "The front's learning rates")
CHANGED: list[str] = [
    "skip_finished",
    "elastic_threads",
    "synth_split",
    "transforms.output_rate_hz",
    "dataset.split_dir",
    "dataset.format",
    "model.frontend.kernel_sizes",
    *(f"datamodule.{k}" for k in DATAMODULE_LINKS),
    "datamodule._target_",
]


def composed(overrides: list[str]) -> dict[str, Any]:
    """The resolved config of ``overrides`` without the ``hydra`` node."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*FIXED, *overrides])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    dataset = plain.get("dataset") or {}
    for name in ("train", "val", "test"):  # real splits: hundreds of sessions, kept as a digest
        if isinstance(dataset.get(name), list):
            text = json.dumps(dataset[name], sort_keys=True).encode()
            dataset[name] = "sha256:" + hashlib.sha256(text).hexdigest()
    return plain


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key) or {}
    tree.pop(leaf, None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_composes_as_before(case):
    before = json.loads(SNAPSHOT.read_text())[case]
    _compare(case, before, composed(CASES[case]))


def _compare(case: str, before: dict[str, Any], now: dict[str, Any]) -> None:
    for dotted in CHANGED:
        _drop(now, dotted)
        _drop(before, dotted)
    for node in sorted(set(before) | set(now)):
        assert now.get(node) == before.get(node), f"{case}: node {node!r} changed"


@pytest.mark.parametrize("case", ["default", "demo", "pareto_s"])
def test_datamodule_reads_the_run_settings(case):
    cfg = composed(CASES[case])
    assert cfg["datamodule"]["_target_"] == "emg2qwerty_ssm.datamodule.EMGDataModule"
    for key, source in DATAMODULE_LINKS.items():
        value: Any = cfg
        for part in source.split("."):
            value = value[part]
        assert cfg["datamodule"][key] == value, key


@pytest.mark.parametrize(
    ("model", "kind", "rate"),
    [("tds_conv_ctc", "log_spectrogram", 125), ("tc_s4_small", "raw", 2000)],
)
def test_the_input_rate_comes_from_the_models_transforms(model, kind, rate):
    cfg = composed([f"model={model}"])  # tds_conv_ctc selects its transforms (conf/model_input/)
    assert cfg["transforms"]["kind"] == cfg["model"]["input_kind"] == kind
    assert cfg["model"]["input_rate_hz"] == cfg["transforms"]["output_rate_hz"] == rate
    # an override of the transforms' rate reaches the model (one home for the number)
    cfg = composed([f"model={model}", "transforms.output_rate_hz=1000"])
    assert cfg["model"]["input_rate_hz"] == 1000


def test_no_model_file_sets_the_rate_and_the_spectrogram_rate_follows_its_hop():
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        assert "input_rate_hz" not in OmegaConf.load(path), f"{path} sets input_rate_hz"
    raw = OmegaConf.load(CONFIG_DIR / "transforms" / "raw.yaml")
    spec = OmegaConf.load(CONFIG_DIR / "transforms" / "log_spectrogram.yaml")
    assert spec.output_rate_hz == raw.output_rate_hz / spec.logspec.hop_length


@pytest.mark.parametrize("spelling", sorted(NEW_SPELLINGS))
def test_new_spelling_composes_as_the_old(spelling):
    case, overrides = NEW_SPELLINGS[spelling]
    before = json.loads(SNAPSHOT.read_text())[case]
    _compare(case, before, composed(overrides))


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    SNAPSHOT.parent.mkdir(exist_ok=True)
    snap = {case: composed(overrides) for case, overrides in sorted(CASES.items())}
    SNAPSHOT.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(snap)} cases to {SNAPSHOT}")


def test_pareto_size_wins_over_the_demo_recipe_in_any_order():
    # The sweep selects sweep/pareto_size after the demo recipe's model, so the size given on
    # the command line decides the model wherever it stands (it once lost when put first).
    for overrides in (
        ["+sweep=pareto_synthetic", "sweep/pareto_size=tc_s4_medium"],
        ["sweep/pareto_size=tc_s4_medium", "+sweep=pareto_synthetic"],
    ):
        assert composed(overrides)["model"]["name"] == "tc_s4_medium", overrides
    assert composed(["+sweep=pareto_synthetic"])["model"]["name"] == "tc_s4_small"


def test_demo_finetune_is_the_demo_recipe_from_the_committed_generic_model():
    from emg2qwerty_ssm.paths import resolve_user_path
    from emg2qwerty_ssm.train import load_checkpoint_model

    finetune, demo = composed(["experiment=demo_finetune"]), composed(["experiment=demo"])
    assert finetune["trainer"]["max_epochs"] == 20 and demo["trainer"]["max_epochs"] == 40
    assert finetune["lr_scheduler"]["scheduler"]["T_0"] == 20  # one cosine cycle over the run
    for key in ("model", "datamodule", "optimizer", "user", "synth_split", "monitor_metric"):
        assert finetune[key] == demo[key], key
    # the committed generic model loads (checksums verified) as the demo's TC_S4_small
    path = resolve_user_path(finetune["checkpoint"])
    assert path.is_file(), path
    model, model_cfg = load_checkpoint_model(path)
    assert model_cfg is not None and model_cfg["name"] == "tc_s4_small"
    assert sum(p.numel() for p in model.parameters()) == 388_437
