#!/usr/bin/env python
"""The paper's command line, mapped onto this project's Hydra configs and checkpoints/.

    python scripts/run_model.py --user user3 --model TC_S4_small --root_dataset /data/emg2qwerty
    python scripts/run_model.py --user generic --model S4_large --root_dataset /data/emg2qwerty
    python scripts/run_model.py --user user3 --model TC_S4_small --root_dataset /data/... --train

As in the seed (docs/recipe.md#evaluation):

- without ``--train``: evaluation only (``train=false``) of the released checkpoint,
  ``checkpoints/<model>_generic/generic_checkpoint.ckpt`` for ``--user generic`` (zero-shot on
  the 8 held-out users' test sessions) or ``checkpoints/<model>_ft/<user>_checkpoint.ckpt``
  (fine-tuned, tested on that user's test sessions); the architecture comes from the checkpoint;
- with ``--train``: fine-tuning from the generic checkpoint with the full paper recipe (fresh
  optimizer and schedule), for every user including ``generic``. ``--from_scratch`` trains
  without a starting checkpoint instead.

Checkpoints in the seed's Lightning format load as they are (see checkpoints/README.md).
Anything after ``--`` is passed to Hydra as extra overrides, e.g. ``-- trainer=gpu``.
``--write_manifest`` (re)writes checkpoints/manifest.json from the files present.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = {"S4_large": "s4_large", "TC_S4_medium": "tc_s4_medium", "TC_S4_small": "tc_s4_small"}
USERS = ["generic", *(f"user{i}" for i in range(8))]
MANIFEST = "manifest.json"


def checkpoint_path(checkpoints_dir: Path, model: str, user: str, train: bool) -> Path:
    """The seed's layout: ``<model>_generic/generic_checkpoint.ckpt`` (zero-shot model, and the
    start of every fine-tuning) and ``<model>_ft/<user>_checkpoint.ckpt`` (fine-tuned)."""
    if train or user == "generic":
        return checkpoints_dir / f"{model}_generic" / "generic_checkpoint.ckpt"
    return checkpoints_dir / f"{model}_ft" / f"{user}_checkpoint.ckpt"


def build_overrides(args: argparse.Namespace, extra: Sequence[str] = ()) -> list[str]:
    """Hydra overrides equivalent to the paper's command line."""
    overrides = [
        "dataset=real",
        f"dataset.root={Path(args.root_dataset).expanduser().resolve()}",
        f"user={args.user}",
        f"model={MODELS[args.model]}",
        "transforms=raw",
        f"train={'true' if args.train else 'false'}",
    ]
    if not (args.train and args.from_scratch):
        ckpt = checkpoint_path(Path(args.checkpoints_dir), args.model, args.user, args.train)
        if not ckpt.is_file():
            raise SystemExit(
                f"checkpoint {ckpt} not found. Put the authors' released checkpoints under "
                f"{args.checkpoints_dir}/ as described in checkpoints/README.md"
                + (" (or pass --from_scratch)" if args.train else "")
            )
        _verify_manifest(Path(args.checkpoints_dir), ckpt)
        overrides.append(f"checkpoint={ckpt.resolve()}")
    return [*overrides, *extra]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(checkpoints_dir: Path) -> Path:
    """List every checkpoint under ``checkpoints_dir`` with model, user, size and SHA-256.

    Scores are never written here: they come from evaluating the files (results.json).
    """
    entries = []
    for path in sorted(checkpoints_dir.glob("*_*/*_checkpoint.ckpt")):
        model, _, kind = path.parent.name.rpartition("_")
        entries.append(
            {
                "path": str(path.relative_to(checkpoints_dir)),
                "model": model,
                "kind": kind,  # "generic" (zero-shot) or "ft" (fine-tuned)
                "user": path.name.removesuffix("_checkpoint.ckpt"),
                "bytes": path.stat().st_size,
                "sha256": sha256(path),
            }
        )
    out = checkpoints_dir / MANIFEST
    out.write_text(json.dumps({"checkpoints": entries}, indent=2) + "\n")
    return out


def _verify_manifest(checkpoints_dir: Path, ckpt: Path) -> None:
    manifest = checkpoints_dir / MANIFEST
    if not manifest.is_file():
        return
    rel = str(ckpt.relative_to(checkpoints_dir))
    for entry in json.loads(manifest.read_text()).get("checkpoints", []):
        if entry.get("path") == rel and entry.get("sha256") and entry["sha256"] != sha256(ckpt):
            raise SystemExit(f"{ckpt}: SHA-256 differs from {manifest}; the file changed")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", choices=USERS)
    parser.add_argument("--model", choices=sorted(MODELS))
    parser.add_argument("--root_dataset", help="directory with the emg2qwerty session files")
    parser.add_argument("--train", action="store_true", help="fine-tune (default: evaluate)")
    parser.add_argument("--from_scratch", action="store_true", help="with --train: no init")
    parser.add_argument("--checkpoints_dir", default=str(REPO / "checkpoints"))
    parser.add_argument("--write_manifest", action="store_true")
    args = parser.parse_args(argv)
    if not args.write_manifest and not (args.user and args.model and args.root_dataset):
        parser.error("--user, --model and --root_dataset are required")
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.write_manifest:
        print(write_manifest(Path(args.checkpoints_dir)))
        return 0
    overrides = build_overrides(args, extra)
    print("python -m emg2qwerty_ssm.train " + " ".join(overrides), flush=True)
    from emg2qwerty_ssm.train import main as train_main

    sys.argv = [sys.argv[0], *overrides]
    train_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
