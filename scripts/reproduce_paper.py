#!/usr/bin/env python
"""Reproduce the paper's personalized results in one recipe (docs/reproduce.md).

For each model (``s4_large``, ``tc_s4_medium``, ``tc_s4_small`` by default)::

    1. generic training        experiment=generic model=<model>     -> OUT/<model>/generic
    2. place its best checkpoint where fine-tuning finds it:
                               OUT/checkpoints/<Label>_generic/generic_checkpoint.ckpt
    3. fine-tune per user      experiment=finetune model=<model> checkpoint=<2.> user=userN
                                                                    -> OUT/<model>/ft/userN
    4. evaluate every fine-tuned model (and the generic one: the zero-shot row) again with
       beam search + the 6-gram character LM  -> .../beam_lm
then optionally the emg2qwerty baseline from its released checkpoints (``--baseline-dir``,
greedy and LM), and finally per-model tables (each user's CER and the mean beside the
published numbers of docs/published.yaml) in OUT/paper_tables.md / .csv and a Fig. 2A-style
plot OUT/fig2a.png / .svg.

Every step is one ``python -m emg2qwerty_ssm.train`` command, printed before it runs; a step
whose ``results.json`` exists is skipped, so an interrupted recipe continues where it stopped.

    python scripts/reproduce_paper.py --data /data/emg2qwerty [--models tc_s4_small]
    python scripts/reproduce_paper.py --synthetic tiny --users user0 user1 --set debug=smoke
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emg2qwerty_ssm import CONFIG_DIR, collect
from emg2qwerty_ssm.atomic_io import atomic_write, atomic_write_text
from emg2qwerty_ssm.published import load_published, published_mean
from emg2qwerty_ssm.results import RESULTS_FILE, read_results

REPO = CONFIG_DIR.parent
MODELS = ("s4_large", "tc_s4_medium", "tc_s4_small")
USERS = tuple(f"user{i}" for i in range(8))
REAL_LM = "models/lm/wikitext-103-6gram-charlm.bin"
SYNTHETIC_LM = "models/lm/synthetic-6gram-charlm.arpa"
BASELINE = "tds_conv_ctc"
PUBLISHED = collect.PUBLISHED_COLUMN


@dataclass
class Recipe:
    out: Path
    models: list[str]
    users: list[str]
    dataset: list[str]  # overrides selecting the data
    synthetic: bool
    lm: Path | None
    baseline_dir: Path | None
    extra: list[str]  # overrides for every training step
    dry_run: bool = False
    in_process: bool = False  # train(cfg) in this process (tests: no interpreter start-ups)

    def user_choice(self, user: str) -> str:
        return f"synth_{user}" if self.synthetic else user


def label(model: str) -> str:
    """The paper's name of a model, used in the checkpoint layout (``TC_S4_small``)."""
    return str(load_published()["models"][model]["label"])


# ----------------------------------------------------------------------------- steps


def run_step(recipe: Recipe, run_dir: Path, overrides: Sequence[str]) -> dict[str, Any] | None:
    """``python -m emg2qwerty_ssm.train OVERRIDES`` into ``run_dir`` (skipped if done)."""
    cmd = [sys.executable, "-m", "emg2qwerty_ssm.train", *overrides, f"hydra.run.dir={run_dir}"]
    if (run_dir / RESULTS_FILE).is_file():
        print(f"[paper] done already: {run_dir}", flush=True)
        return read_results(run_dir)
    print("[paper] $ " + " ".join(cmd[1:]), flush=True)
    if recipe.dry_run:
        return None
    if recipe.in_process:
        return _train_in_process(run_dir, overrides)
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"[paper] step failed (exit {result.returncode}): see {run_dir}/train.log")
    return read_results(run_dir)


def _train_in_process(run_dir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from emg2qwerty_ssm.train import train

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    return train(cfg)


def place_checkpoint(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically; never overwrite a different existing file."""
    if target.is_file():
        if _sha256(target) == _sha256(source):
            return
        raise SystemExit(
            f"[paper] {target} exists and differs from the new generic checkpoint {source}; "
            "move it away (or choose another --out) to continue"
        )
    with source.open("rb") as src, atomic_write(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    print(f"[paper] generic checkpoint placed at {target}", flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def lm_overrides(recipe: Recipe) -> list[str]:
    return ["decoder=ctc_beam", f"decoder.lm_path={recipe.lm}", "evaluation.splits=[test]"]


def run_model(recipe: Recipe, model: str) -> None:
    base = recipe.out / model
    ckpt_dir = recipe.out / "checkpoints"
    generic_user = "synth_generic" if recipe.synthetic else "generic"
    common = [*recipe.dataset, *recipe.extra]
    generic = run_step(
        recipe,
        base / "generic",
        ["experiment=generic", f"model={model}", f"user={generic_user}", *common],
    )
    target = ckpt_dir / f"{label(model)}_generic" / "generic_checkpoint.ckpt"
    if generic is not None:
        place_checkpoint(Path(generic["checkpoint"]), target)
    if recipe.lm is not None:
        run_step(
            recipe,
            base / "generic" / "beam_lm",
            ["train=false", f"checkpoint={target}", f"model={model}", f"user={generic_user}"]
            + [*common, *lm_overrides(recipe)],
        )
    for user in recipe.users:
        ft = run_step(
            recipe,
            base / "ft" / user,
            ["experiment=finetune", f"model={model}", f"checkpoint={target}"]
            + [f"user={recipe.user_choice(user)}", *common],
        )
        if recipe.lm is not None and ft is not None:
            run_step(
                recipe,
                base / "ft" / user / "beam_lm",
                ["train=false", f"checkpoint={ft['checkpoint']}", f"model={model}"]
                + [f"user={recipe.user_choice(user)}", *common, *lm_overrides(recipe)],
            )


def run_baseline(recipe: Recipe) -> None:
    """emg2qwerty's released checkpoints under the same protocols and decoders."""
    assert recipe.baseline_dir is not None
    base = recipe.out / BASELINE
    common = [*recipe.dataset, f"model={BASELINE}", "transforms=log_spectrogram", "train=false"]
    common += [o for o in recipe.extra if o.startswith("debug=")]
    targets = [("generic", "synth_generic" if recipe.synthetic else "generic", "generic.ckpt")]
    targets += [
        (u, recipe.user_choice(u), f"personalized-finetuned/{u}.ckpt") for u in recipe.users
    ]
    for name, choice, rel in targets:
        ckpt = recipe.baseline_dir / rel
        run_dir = base / ("generic" if name == "generic" else f"ft/{name}")
        run_step(recipe, run_dir, [*common, f"user={choice}", f"checkpoint={ckpt}"])
        if recipe.lm is not None:
            run_step(
                recipe,
                run_dir / "beam_lm",
                [*common, f"user={choice}", f"checkpoint={ckpt}", *lm_overrides(recipe)],
            )


# ----------------------------------------------------------------------------- tables, plot


def _plain_user(user: str) -> str:
    return user.removeprefix("synth_")


def model_table(recipe: Recipe, model: str) -> collect.UserTable | None:
    runs, _ = collect.load_runs([recipe.out / model / "ft"])
    columns = ["test/paper/greedy", "test/session/greedy", "test/paper/beam", "test/session/beam"]
    tables = collect.build_tables(runs, "CER", columns)
    if not tables:
        return None
    table = tables[0]
    table.model = model
    table.cells = {_plain_user(u): row for u, row in table.cells.items()}
    collect.add_published(table)
    # zero-shot: the generic model on the held-out users' test sessions (all of them at once)
    zero_shot: dict[str, float] = {}
    for sub in ("generic", "generic/beam_lm"):
        path = recipe.out / model / sub / RESULTS_FILE
        if path.is_file():
            for key, entry in read_results(path)["metrics"].items():
                if key in columns and entry.get("CER") is not None:
                    zero_shot[key] = float(entry["CER"])
    published = published_mean(model, "greedy", "zero_shot")
    if PUBLISHED in table.columns and published is not None:
        zero_shot[PUBLISHED] = float(published)
    if zero_shot:
        table.extra_rows["zero-shot"] = zero_shot
    return table


def write_tables(recipe: Recipe, tables: list[collect.UserTable]) -> Path:
    lines = [
        "# Reproduction of the paper's personalized CERs",
        "",
        f"Data: {'synthetic (smoke scale, not comparable)' if recipe.synthetic else 'emg2qwerty'}"
        f"; published numbers from docs/published.yaml (real data, greedy, fine-tuned).",
        "",
    ]
    for t in tables:
        mean_pub = published_mean(t.model, "greedy")
        mean_lm = published_mean(t.model, "lm")
        zero_lm = published_mean(t.model, "lm", "zero_shot")
        lines.append(collect.to_markdown([t]))
        lines.append(
            f"Published mean (Fig. 2A): greedy {mean_pub}, with 6-gram char LM {mean_lm}"
            + (f"; zero-shot with LM {zero_lm}." if zero_lm is not None else ".")
            if mean_pub is not None
            else ""
        )
        lines += [f"- {n}" for n in t.notes] + [""]
    md = atomic_write_text(recipe.out / "paper_tables.md", "\n".join(lines) + "\n")
    atomic_write_text(recipe.out / "paper_tables.csv", collect.to_csv(tables))
    return md


def plot_fig2a(recipe: Recipe, tables: list[collect.UserTable]) -> list[Path]:
    """Mean test CER vs MAC/s: measured here (greedy, LM) beside the published points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emg2qwerty_ssm.published import references

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ref in references():
        for value, marker, fill in ((ref.cer_greedy, "D", "tab:gray"), (ref.cer_lm, "s", "none")):
            if value is not None:
                ax.scatter(
                    ref.macs_per_second, value, marker=marker, facecolor=fill, edgecolor="tab:gray"
                )
                ax.annotate(ref.label, (ref.macs_per_second, value), fontsize=6, color="tab:gray")
    for t in tables:
        macs = load_published()["models"].get(t.model, {}).get("macs_per_second")
        for column, marker, fill in (
            ("test/paper/greedy", "o", "tab:blue"),
            ("test/paper/beam", "o", "none"),
        ):
            mean, n = t.mean(column) if column in t.columns else (None, 0)
            if mean is not None and macs:
                ax.scatter(
                    float(macs), mean, marker=marker, facecolor=fill, edgecolor="tab:blue", s=60
                )
                ax.annotate(f"{t.model} (here, {n} users)", (float(macs), mean), fontsize=7)
    ax.scatter([], [], marker="o", color="tab:blue", label="measured here, greedy")
    ax.scatter([], [], marker="o", facecolor="none", edgecolor="tab:blue", label="here, + char LM")
    ax.scatter([], [], marker="D", color="tab:gray", label="published, greedy")
    ax.scatter([], [], marker="s", facecolor="none", edgecolor="tab:gray", label="published, + LM")
    ax.set_xscale("log")
    ax.set_xlabel("MAC/s of streaming 2 kHz input")
    ax.set_ylabel("mean test CER (%), paper protocol")
    ax.set_title("personalized CER vs compute" + (" (synthetic data)" if recipe.synthetic else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    outs = [recipe.out / "fig2a.png", recipe.out / "fig2a.svg"]
    for out in outs:
        fig.savefig(out, dpi=150)
    plt.close(fig)
    return outs


# ----------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None) -> Recipe:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="the emg2qwerty dataset root (real data)")
    src.add_argument("--synthetic", choices=("tiny", "demo", "full"), help="synthetic preset")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--users", nargs="+", default=list(USERS), choices=USERS)
    p.add_argument("--out", type=Path, default=Path("outputs/paper"))
    p.add_argument(
        "--lm", type=Path, help=f"character LM (default {REAL_LM}, synthetic: {SYNTHETIC_LM})"
    )
    p.add_argument("--no-lm", action="store_true", help="greedy only")
    p.add_argument(
        "--baseline-dir",
        type=Path,
        help="emg2qwerty's released models/ (generic.ckpt, personalized-finetuned/)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides for every step, e.g. trainer=gpu debug=smoke",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--in-process", action="store_true", help="run the steps in this process")
    a = p.parse_args(argv)
    if a.data is not None:
        if not a.data.is_dir():
            p.error(f"--data {a.data}: no such directory")
        dataset = ["dataset=real", f"dataset.root={a.data.resolve()}"]
    else:
        dataset = [f"dataset=synthetic_{a.synthetic}"]
    lm = None
    if not a.no_lm:
        lm = (a.lm or REPO / (SYNTHETIC_LM if a.synthetic else REAL_LM)).resolve()
        if not lm.is_file():  # before hours of training, not after
            p.error(f"character LM {lm} not found: see docs/reproduce.md, or pass --no-lm")
    if a.baseline_dir is not None:
        needed = ["generic.ckpt", *(f"personalized-finetuned/{u}.ckpt" for u in a.users)]
        missing = [n for n in needed if not (a.baseline_dir / n).is_file()]
        if missing:
            p.error(f"--baseline-dir {a.baseline_dir}: missing {missing}")
    return Recipe(
        out=a.out.resolve(),
        models=list(a.models),
        users=list(a.users),
        dataset=dataset,
        synthetic=a.synthetic is not None,
        lm=lm,
        baseline_dir=a.baseline_dir.resolve() if a.baseline_dir else None,
        extra=list(a.set),
        dry_run=a.dry_run,
        in_process=a.in_process,
    )


def main(argv: Sequence[str] | None = None) -> int:
    recipe = parse(argv)
    for model in recipe.models:
        run_model(recipe, model)
    if recipe.baseline_dir is not None:
        run_baseline(recipe)
    if recipe.dry_run:
        return 0
    names = [*recipe.models, *([BASELINE] if recipe.baseline_dir else [])]
    tables = [t for t in (model_table(recipe, m) for m in names) if t is not None]
    collect.print_tables(tables)
    md = write_tables(recipe, tables)
    figs = plot_fig2a(recipe, tables)
    hours = (
        sum(
            float(read_results(p).get("wall_time_s") or 0.0) for p in recipe.out.rglob(RESULTS_FILE)
        )
        / 3600
    )
    print(f"[paper] tables: {md} (+ .csv); figure: {figs[0]}; wall time of all steps {hours:.2f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
