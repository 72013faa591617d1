"""The published numbers (docs/published.yaml) as data for tables and plots.

``docs/published.yaml`` holds the paper's per-user, per-model, zero-shot, baseline and
prior-work CERs; everything that prints or plots a published number reads it through here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emg2qwerty_ssm import CONFIG_DIR

PUBLISHED_FILE = CONFIG_DIR.parent / "docs" / "published.yaml"
#: the ``source`` of a reference point: the paper's models, emg2qwerty's baseline, others
BASELINE = "tds_conv_ctc"


@dataclass(frozen=True)
class Reference:
    """A published point of Fig. 2A: personalized CER %, MAC/s of 2 kHz input."""

    label: str
    macs_per_second: float
    cer_greedy: float | None
    cer_lm: float | None
    source: str


@functools.cache
def load_published(path: str | Path = PUBLISHED_FILE) -> dict[str, Any]:
    """The parsed ``published.yaml`` (a clear error names the file if it is missing/bad)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"published numbers not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "models" not in data or "users" not in data:
        raise ValueError(f"{path}: expected top-level 'users' and 'models'")
    return data


def references(path: str | Path = PUBLISHED_FILE) -> tuple[Reference, ...]:
    """Fig. 2A's points: the paper's models, the emg2qwerty baseline, prior work."""
    data = load_published(path)
    refs = []
    for name, model in data["models"].items():
        fig = model.get("fig2a") or {}
        refs.append(
            Reference(
                label=str(model.get("label", name)),
                macs_per_second=float(model["macs_per_second_paper"]),
                cer_greedy=fig.get("greedy"),
                cer_lm=fig.get("lm"),
                source="emg2qwerty baseline" if name == BASELINE else "paper",
            )
        )
    for point in data.get("prior_work") or []:
        refs.append(
            Reference(
                label=str(point["label"]),
                macs_per_second=float(point["macs_per_second"]),
                cer_greedy=point.get("greedy"),
                cer_lm=point.get("lm"),
                source="prior work",
            )
        )
    return tuple(refs)


def per_user(model: str, condition: str = "finetuned") -> dict[str, float] | None:
    """``{user0: cer, ...}`` published for ``model`` (greedy), or None if none is published."""
    data = load_published()
    entry = (data["models"].get(model) or {}).get("per_user_greedy") or {}
    values = entry.get(condition)
    if values is None:
        return None
    return dict(zip(data["users"], map(float, values), strict=True))


def published_mean(model: str, decoder: str = "greedy", condition: str = "finetuned") -> Any:
    """The published mean CER of ``model`` (Fig. 2A, or ``zero_shot``), or None."""
    entry = load_published()["models"].get(model) or {}
    node = entry.get("zero_shot" if condition == "zero_shot" else "fig2a") or {}
    return node.get("lm" if decoder.startswith("beam") or decoder == "lm" else "greedy")
