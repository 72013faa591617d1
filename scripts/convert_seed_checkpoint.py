"""Convert a seed (Lightning) checkpoint into the project's own, safe-to-load format.

    python scripts/convert_seed_checkpoint.py IN.ckpt OUT.ckpt [--trust-pickle]

The output holds the inferred model config (plain YAML-able dict), the renamed weights and
the seed's metadata (epoch, global step, hyper-parameters); load it with
``emg2qwerty_ssm.models.load_model(OUT.ckpt)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emg2qwerty_ssm.models.checkpoints import (
    CheckpointError,
    _plain,
    _torch_load,
    load_model,
    save_model,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="seed Lightning checkpoint (.ckpt)")
    parser.add_argument("output", type=Path, help="where to write the converted checkpoint")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow arbitrary pickled objects in IN.ckpt (only for files you trust)",
    )
    args = parser.parse_args(argv)
    try:
        model = load_model(args.input, trust_pickle=args.trust_pickle)
        raw = _torch_load(args.input, "cpu", args.trust_pickle)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    seed = {k: raw[k] for k in ("epoch", "global_step", "pytorch-lightning_version") if k in raw}
    seed["hyper_parameters"] = _plain(raw.get("hyper_parameters", {}))
    save_model(model, args.output, metadata={"source": str(args.input), "seed": seed})
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"wrote {args.output}: {model.name}, {params:,} parameters, stride {model.stride}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
