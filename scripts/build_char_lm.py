#!/usr/bin/env python
"""Build a character n-gram KenLM (ARPA or binary) from a text corpus.

    python scripts/build_char_lm.py CORPUS [CORPUS ...] OUT.arpa|OUT.bin --order 6
    python scripts/build_char_lm.py --synthetic-prompts OUT.bin --order 6

Preprocessing as emg2qwerty's wikitext LM (emg2qwerty_ssm/decoding/lm_corpus.py): lower-
cased words of the letters a-z only, one word per line, characters as space-separated
tokens. Then KenLM's ``lmplz --discount_fallback`` (small character vocabularies break
Kneser-Ney's discount estimation without it) and, for ``.bin``, ``build_binary``.

``lmplz``/``build_binary`` are looked up in --kenlm-bin (only there, when given), else
$KENLM_BIN, build/kenlm/bin and PATH; build them with ``scripts/build_lmplz.sh`` (``make
lm``). CORPUS may be ``-`` (stdin). ``--synthetic-prompts`` adds the offline English text
the synthetic sessions' prompts are drawn from (emg2qwerty_ssm.synthetic.text), for the
synthetic demo's LM. ``--corpus-out FILE`` also keeps the preprocessed text.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from emg2qwerty_ssm.decoding.lm_corpus import char_lm_lines  # noqa: E402


def find_tool(name: str, kenlm_bin: str | None) -> str:
    if kenlm_bin is not None:
        candidates = [kenlm_bin]
    else:
        candidates = [os.environ.get("KENLM_BIN"), str(REPO / "build" / "kenlm" / "bin")]
    for folder in candidates:
        if folder and (Path(folder) / name).is_file():
            return str(Path(folder) / name)
    found = shutil.which(name) if kenlm_bin is None else None
    if found:
        return found
    sys.exit(
        f"error: KenLM's {name} not found (looked in --kenlm-bin, $KENLM_BIN, "
        f"{REPO / 'build/kenlm/bin'} and PATH); build it with scripts/build_lmplz.sh "
        "(make lm)"
    )


def synthetic_prompt_text():
    """The prose and word list the synthetic generator draws its prompts from."""
    from emg2qwerty_ssm.synthetic.text import load_corpus

    corpus = load_corpus()
    yield from corpus.chunks
    yield from corpus.words


def read_corpora(paths: list[str], synthetic: bool):
    if synthetic:
        yield from synthetic_prompt_text()
    for path in paths:
        if path == "-":
            yield from sys.stdin
            continue
        if not Path(path).is_file():
            sys.exit(f"error: corpus file not found: {path}")
        with open(path, encoding="utf-8", errors="replace") as f:
            yield from f


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="*", help="UTF-8 text file(s), or - for stdin")
    parser.add_argument("out", help="output LM: *.arpa or *.bin (KenLM binary)")
    parser.add_argument("--order", type=int, default=6, help="n-gram order (default 6)")
    parser.add_argument("--kenlm-bin", help="folder with lmplz and build_binary")
    parser.add_argument("--memory", default="1G", help="lmplz -S memory for sorting (default 1G)")
    parser.add_argument("--corpus-out", help="also write the preprocessed corpus here")
    parser.add_argument(
        "--synthetic-prompts",
        action="store_true",
        help="add the synthetic prompts' offline text source to the corpus",
    )
    args = parser.parse_args(argv)
    if not args.corpus and not args.synthetic_prompts:
        parser.error("give at least one CORPUS file or --synthetic-prompts")

    out = Path(args.out)
    if out.suffix not in (".arpa", ".bin"):
        parser.error(f"output must end in .arpa or .bin, got {args.out!r}")
    if args.order < 2:
        parser.error(f"--order must be >= 2, got {args.order}")
    lmplz = find_tool("lmplz", args.kenlm_bin)
    build_binary = find_tool("build_binary", args.kenlm_bin) if out.suffix == ".bin" else None
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus_out) if args.corpus_out else Path(tmp) / "corpus.txt"
        n_words = 0
        with open(corpus, "w", encoding="utf-8") as f:
            for line in char_lm_lines(read_corpora(args.corpus, args.synthetic_prompts)):
                f.write(line + "\n")
                n_words += 1
        if n_words == 0:
            sys.exit("error: the corpus has no words of the letters a-z; nothing to train on")
        print(f"{n_words} words -> {corpus}", file=sys.stderr)
        arpa = out if out.suffix == ".arpa" else Path(tmp) / "lm.arpa"
        cmd = [lmplz, "-o", str(args.order), "--discount_fallback", "-S", args.memory]
        cmd += ["-T", tmp]
        with open(corpus, "rb") as src, open(arpa, "wb") as dst:
            subprocess.run(cmd, stdin=src, stdout=dst, check=True)
        if build_binary is not None:
            subprocess.run([build_binary, str(arpa), str(out)], check=True)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
