"""The CER-vs-MAC/s figure of :mod:`emg2qwerty_ssm.pareto`: our models (mean +- sd over their
seeds, each seed a faint point, the front as a step line through the means) and the published
reference points (real emg2qwerty data)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from emg2qwerty_ssm.pareto import REFERENCES, Group

if TYPE_CHECKING:
    from matplotlib.axes import Axes

OURS = "tab:blue"


def plot(
    groups: Sequence[Group],
    out_stem: str | Path,
    title: str = "CER vs. compute",
    references: str = "greedy",
    ylabel: str = "CER (%)",
) -> list[Path]:
    """Draw ``<stem>.png`` and ``<stem>.svg``: log MAC/s on x, CER on y.

    ``references``: which published CERs to show: "greedy", "lm", "all" or "none".
    """
    if references not in ("greedy", "lm", "all", "none"):
        raise ValueError(f"references={references!r}; expected greedy, lm, all or none")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    # the seeds of groups with several runs (a single run is its own mean)
    seeds = [(g.macs_per_second, r.cer) for g in groups if g.n > 1 for r in g.runs]
    if seeds:
        ax.scatter(
            [x for x, _ in seeds],
            [y for _, y in seeds],
            s=12,
            color=OURS,
            alpha=0.25,
            linewidths=0,
            label="measured here: one seed",
        )
    for on_front in (False, True):
        pts = [g for g in groups if g.on_front == on_front]
        if not pts:
            continue
        what = "Pareto front (means)" if on_front else "mean ± sd over seeds"
        ax.errorbar(
            [g.macs_per_second for g in pts],
            [g.mean for g in pts],
            yerr=[g.sd or 0.0 for g in pts],  # a single run: no bar (no spread known)
            fmt="o",
            ms=7 if on_front else 5,
            color=OURS,
            mec="black" if on_front else OURS,
            alpha=1.0 if on_front else 0.6,
            capsize=3,
            zorder=3,
            label=f"measured here: {what}",
        )
    front = sorted((g for g in groups if g.on_front), key=lambda g: g.macs_per_second)
    if front:
        ax.step(
            [g.macs_per_second for g in front],
            [g.mean for g in front],
            where="post",
            color=OURS,
            lw=1.5,
        )
    # every model named when they are few (a sweep's sizes); only the front among many (Optuna)
    for g in groups if len(groups) <= 12 else front:
        ax.annotate(
            g.name[:40] + (f" (n={g.n})" if g.n > 1 else ""),
            (g.macs_per_second, g.mean),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    _draw_references(ax, references)
    ax.set_xscale("log")
    ax.set_xlabel("MAC/s of streaming 2 kHz input (cost convention of docs/models.md)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    outs = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for out in outs:
        fig.savefig(out, dpi=150)
    plt.close(fig)
    return outs


def _draw_references(ax: Axes, references: str) -> None:
    """The published points (docs/published.yaml): greedy filled, with the char LM hollow."""
    kinds = {
        "greedy": ("cer_greedy",),
        "lm": ("cer_lm",),
        "all": ("cer_greedy", "cer_lm"),
        "none": (),
    }[references]
    colors = {"paper": "tab:red", "emg2qwerty baseline": "tab:green", "prior work": "tab:purple"}
    for source, color in colors.items():
        for attr in kinds:
            pts = [(ref, getattr(ref, attr)) for ref in REFERENCES if ref.source == source]
            pts = [(ref, y) for ref, y in pts if y is not None]
            if not pts:
                continue
            lm = attr == "cer_lm"
            ax.scatter(
                [ref.macs_per_second for ref, _ in pts],
                [y for _, y in pts],
                marker="s" if lm else "D",
                s=40,
                facecolor="none" if lm else color,
                edgecolor=color,
                label=f"published on real data ({source}), {'with char LM' if lm else 'greedy'}",
            )
            for ref, y in pts:
                ax.annotate(
                    ref.label,
                    (ref.macs_per_second, y),
                    fontsize=7,
                    color=color,
                    xytext=(4, -9),
                    textcoords="offset points",
                )
