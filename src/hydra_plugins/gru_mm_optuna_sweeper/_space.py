"""hydra-optuna-sweeper's search-space syntax -> Optuna distributions, and trial params -> override strings.

interval(a, b) -> float, int(interval(a, b)) -> int, tag(log, interval(...)) -> log scale,
choice(...) and shuffle(range(...)) -> categorical, range(a, b, step) -> stepped int/float.
range keeps Hydra's meaning (b excluded), as the basic sweeper and the grid sampler see it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, QuotedString, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


@dataclass
class Param:
    name: str  # Optuna's parameter name: the override key without +/++ (e.g. optimizer.lr, model/encoder)
    prefix: str  # "", "+" or "++", written back in front of each trial's override
    distribution: BaseDistribution


@dataclass
class SearchSpace:
    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> the override line, passed to every trial

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        lines = [f"{p.prefix}{p.name}={format_value(values[p.name])}" for p in self.params.values()]
        return lines + list(self.fixed.values())

    def grid(self) -> dict[str, list[Any]]:
        return {name: grid_values(name, p.distribution) for name, p in self.params.items()}


def build_search_space(params: Mapping[str, Any] | None, arguments: Iterable[str]) -> SearchSpace:
    """`params` from the sweeper config first, command-line arguments after (a later key wins)."""
    lines = [f"{key}={_config_value(key, value)}" for key, value in (params or {}).items()]
    lines += list(arguments)
    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(lines):
        key = _key(override)
        space.params.pop(key, None)
        space.fixed.pop(key, None)
        if override.is_sweep_override():
            prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
            space.params[key] = Param(key, prefix, to_distribution(override))
        else:
            assert override.input_line is not None
            space.fixed[key] = override.input_line
    return space


def _key(override: Override) -> str:
    return (
        override.key_or_group if override.package is None else f"{override.key_or_group}@{override.package}"
    )


def _config_value(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return format_value(value)
    raise ValueError(
        f"hydra.sweeper.params.{key} must be a string such as 'choice(1, 2)' or a scalar, got {value!r}."
    )


def to_distribution(override: Override) -> BaseDistribution:
    key = override.get_key_element()
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(_choices(key, override))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        return _range(key, value, list(override.sweep_iterator()))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"Sweep '{override.input_line}' is not supported: use interval, choice or range.")


def _choices(key: str, override: Override) -> list[Any]:
    choices = []
    for x in override.sweep_iterator(transformer=lambda v: v):
        x = x.text if isinstance(x, QuotedString) else x
        if not (x is None or isinstance(x, str | int | float | bool)):
            raise ValueError(
                f"choice values of '{key}' must be scalars (str, int, float, bool, null), got {x!r}."
            )
        choices.append(x)
    return choices


def _range(key: str, value: RangeSweep, values: list[Any]) -> BaseDistribution:
    if not values:
        raise ValueError(f"range of '{key}' is empty: range({value.start}, {value.stop}, step={value.step}).")
    step = value.step if value.step is not None else 1
    low, n = min(values), len(values)
    if all(isinstance(v, int) for v in values):
        return IntDistribution(low, low + abs(int(step)) * (n - 1), step=abs(int(step)))
    step = abs(float(step))
    return FloatDistribution(float(low), round(low + step * (n - 1), 12), step=step)


def grid_values(name: str, dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = int(round((dist.high - dist.low) / dist.step)) + 1
        return [round(dist.low + i * dist.step, 12) for i in range(n)]
    raise ValueError(f"The grid sampler needs discrete parameters: '{name}' is {dist}; use choice or range.")


def suggest(trial: Any, name: str, dist: BaseDistribution) -> Any:
    """Ask the trial for one value through Optuna's public suggest API."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


# Hydra reads these bare words as something other than a string.
_KEYWORDS = {"true", "false", "null", "nan", "inf", "-inf", "+inf"}
_BARE = re.compile(r"[A-Za-z_][\w\-./]*")


def format_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in _KEYWORDS:
        return text
    # Quoted: a quote is escaped, and so are backslashes right before a quote or the closing quote.
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text)
    return f"'{escaped}'"
