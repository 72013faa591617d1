"""Command line: ``python -m emg2qwerty_ssm.synthetic --preset demo --out DIR --seed 0``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .dataset import ForeignFilesError, generate_dataset, is_complete
from .params import PRESETS, GeneratorParams, preset_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emg2qwerty_ssm.synthetic",
        description="Write a synthetic emg2qwerty dataset (session .hdf5 files, metadata.csv, "
        "splits/*.yaml) in the real layout. See docs/synthetic.md.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--out", type=Path, required=True, help="dataset root to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="do nothing if --out already holds a complete dataset of this preset/seed/config",
    )
    sizes = parser.add_argument_group("size overrides (default: the preset's)")
    sizes.add_argument("--users", type=int, help="total number of users")
    sizes.add_argument("--heldout-users", type=int, help="held-out (personalized) users")
    sizes.add_argument("--sessions-per-user", type=int, help="sessions of each generic user")
    sizes.add_argument("--heldout-sessions", type=int, help="sessions of each held-out user")
    sizes.add_argument("--session-seconds", type=float, help="session length (upper bound)")
    parser.add_argument("--text-file", type=Path, help="English prose to draw prompts from")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a GeneratorParams field (repeatable), e.g. --param noise_uv=2.0",
    )
    return parser


def _parse_params(items: Sequence[str], base: GeneratorParams | None = None) -> GeneratorParams:
    """``base`` (default: GeneratorParams()) with the ``NAME=VALUE`` changes applied."""
    defaults = base if base is not None else GeneratorParams()
    changes = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not hasattr(defaults, name):
            raise SystemExit(
                f"--param {item!r}: expected NAME=VALUE with NAME a GeneratorParams field"
            )
        current = getattr(defaults, name)
        try:
            if isinstance(current, tuple):
                value = tuple(type(current[0])(v) for v in raw.split(","))
            else:
                value = type(current)(raw)
        except ValueError:
            kind = type(current).__name__
            raise SystemExit(f"--param {item!r}: cannot convert {raw!r} to {kind}") from None
        changes[name] = value
    return defaults.replace(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = preset_config(
            args.preset,
            n_users=args.users,
            n_heldout=args.heldout_users,
            sessions_per_user=args.sessions_per_user,
            heldout_sessions=args.heldout_sessions,
            session_seconds=args.session_seconds,
            text_file=str(args.text_file) if args.text_file else None,
            # --param changes the preset's own knobs (demo has easier ones than the defaults)
            params=_parse_params(args.param, PRESETS[args.preset].get("params"))
            if args.param
            else None,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.skip_existing and is_complete(args.out, args.preset, args.seed, config):
        print(f"[synthetic] {args.out} already holds {args.preset!r} seed {args.seed}; skipping")
        return 0
    try:
        generate_dataset(args.out, config, args.seed, preset=args.preset)
    except ForeignFilesError as err:  # e.g. --out is the real dataset: nothing was touched
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
