"""The Optuna search space from ``hydra.sweeper.params``: Hydra's sweep grammar
(``choice``, ``range``, ``interval``, ``tag(log, ...)``) or explicit Optuna distribution dicts,
and the overrides a trial's parameters become. Optuna is imported inside functions (see
``_impl``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf import ListConfig, OmegaConf

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

_SAFE = re.compile(r"^[A-Za-z0-9_./:+\-]+$")


def override_str(value: Any) -> str:
    """A value as Hydra override grammar text (quoted where the grammar needs it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if _SAFE.match(value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple | ListConfig):
        return "[" + ",".join(override_str(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{override_str(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a Hydra override")


class SearchSpace:
    """Optuna distributions per config key, plus the fixed overrides shared by all trials.

    Categorical choices that Optuna cannot store (lists, dicts) are kept as their override
    text, so ``trial.params`` show e.g. ``"[96,192,150]"``.
    """

    def __init__(self) -> None:
        self.distributions: dict[str, BaseDistribution] = {}
        self.fixed: list[str] = []

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        out = list(self.fixed)
        for key, value in params.items():
            text = value if key in self._raw_keys else override_str(value)
            out.append(f"{key}={text}")
        return out

    _raw_keys: set[str]

    @classmethod
    def parse(cls, params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
        """From ``hydra.sweeper.params`` and the command-line overrides (which win)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        space = cls()
        space._raw_keys = set()
        grammar: list[str] = []
        for key, value in (params or {}).items():
            if isinstance(value, Mapping):
                space.distributions[key] = _dict_distribution(key, value, space._raw_keys)
            else:
                grammar.append(
                    f"{key}={override_str(value) if not isinstance(value, str) else value}"
                )
        parser = OverridesParser.create()
        for ov in parser.parse_overrides([*grammar, *arguments]):
            key = ov.get_key_element()
            space.distributions.pop(key, None)
            space.fixed = [f for f in space.fixed if not f.startswith(key + "=")]
            if not ov.is_sweep_override():
                space.fixed.append(f"{key}={ov.get_value_element_as_str()}")
                continue
            sweep: Any = ov.value()  # a ChoiceSweep, RangeSweep or IntervalSweep
            log_scale = "log" in sweep.tags
            if isinstance(sweep, ChoiceSweep):
                choices = [_categorical_value(c, key, space._raw_keys) for c in sweep.list]
                space.distributions[key] = CategoricalDistribution(choices)
            elif isinstance(sweep, RangeSweep):
                start, stop, step = cast(Any, (sweep.start, sweep.stop, sweep.step))
                if all(isinstance(v, int) for v in (start, stop, step)) and step > 0:
                    high = start + (stop - 1 - start) // step * step
                    if high < start:
                        raise HydraException(f"{key}: empty range({start}, {stop}, {step})")
                    if log_scale and step != 1:
                        raise HydraException(f"{key}: Optuna's log scale needs step 1")
                    space.distributions[key] = IntDistribution(
                        start, high, log=log_scale, step=step
                    )
                else:
                    space.distributions[key] = CategoricalDistribution(list(sweep.range()))
            elif isinstance(sweep, IntervalSweep):
                low, high = cast(Any, (sweep.start, sweep.end))
                if "int" in sweep.tags or (isinstance(low, int) and isinstance(high, int)):
                    space.distributions[key] = IntDistribution(int(low), int(high), log=log_scale)
                else:
                    space.distributions[key] = FloatDistribution(
                        float(low), float(high), log=log_scale
                    )
            else:
                raise HydraException(f"{key}: unsupported sweep {ov.input_line!r}")
        return space


def _categorical_value(choice: Any, key: str, raw_keys: set[str]) -> Any:
    if choice is None or isinstance(choice, bool | int | float | str):
        return choice
    raw_keys.add(key)  # lists/dicts travel as override text
    return override_str(choice)


def _dict_distribution(key: str, spec: Mapping[str, Any], raw_keys: set[str]) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    kind = spec.get("type")
    try:
        if kind == "float":
            return FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log", False)),
                step=spec.get("step"),
            )
        if kind == "int":
            return IntDistribution(
                int(spec["low"]),
                int(spec["high"]),
                log=bool(spec.get("log", False)),
                step=int(spec.get("step", 1)),
            )
        if kind == "categorical":
            choices: Any = (
                OmegaConf.to_container(spec["choices"])
                if isinstance(spec["choices"], ListConfig)
                else spec["choices"]
            )
            return CategoricalDistribution([_categorical_value(c, key, raw_keys) for c in choices])
    except KeyError as e:
        raise HydraException(f"hydra.sweeper.params.{key}: missing field {e}") from None
    raise HydraException(
        f"hydra.sweeper.params.{key}.type={kind!r}; expected float, int or categorical"
    )


# ----------------------------------------------------------------------------- results
