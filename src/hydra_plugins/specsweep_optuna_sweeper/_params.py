"""`params` in Hydra's sweep syntax -> Optuna distributions, parsed by Hydra's own override parser.

choice(a, b, c) / a,b,c        CategoricalDistribution([a, b, c])
range(1, 5) / range(1, 9, 2)   IntDistribution(1, 4) / IntDistribution(1, 7, step=2): Hydra's range, stop excluded
range(0.1, 0.5, 0.1)           FloatDistribution(0.1, 0.4, step=0.1)
interval(0, 1)                 FloatDistribution(0.0, 1.0): Hydra's interval is always float ...
int(interval(1, 10))           IntDistribution(1, 10): ... unless cast to int
tag(log, interval(1e-4, 1))    FloatDistribution(1e-4, 1.0, log=True) (and tag(log, int(interval(...))))
5, abc, null                   not swept: applied to every trial as it is
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

# A value Hydra reads back as the same string without quotes (anything else is quoted).
_PLAIN = re.compile(r"^[A-Za-z0-9_./:+\-@]+$")


class SweepConfigError(ValueError):
    """A sweeper setting that cannot work; its message is one line naming the key, the value and what is allowed."""


@dataclass
class SearchSpace:
    """The parsed params: what Optuna samples, and the overrides every trial gets unchanged."""

    distributions: Dict[str, BaseDistribution] = field(default_factory=dict)  # param -> distribution
    fixed: Dict[str, str] = field(default_factory=dict)  # key -> the override as written (applied to every job)


def parse_params(overrides: List[str]) -> SearchSpace:
    """Later overrides of a key replace earlier ones (the command line after the config's params)."""
    space = SearchSpace()
    for text in overrides:
        override = _parse(text)
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = to_distribution(override)
        else:
            space.fixed[key] = override.input_line or text
    return space


def _parse(text: str) -> Override:
    try:
        return OverridesParser.create().parse_override(text)
    except HydraException as err:
        raise SweepConfigError(f"hydra.sweeper.params: cannot parse {text!r}: {' '.join(str(err).split())}") from None


def to_distribution(override: Override) -> BaseDistribution:
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return _choice(override, value)
    if isinstance(value, RangeSweep):
        return _range(override, value)
    if isinstance(value, IntervalSweep):
        return _interval(value)
    raise SweepConfigError(
        f"hydra.sweeper.params.{override.get_key_element()}={override.input_line}: Optuna cannot sample it; "
        "use choice(), range() or interval()"
    )


def _choice(override: Override, sweep: ChoiceSweep) -> CategoricalDistribution:
    if "log" in sweep.tags:
        raise SweepConfigError(f"{override.input_line}: tag(log, ...) applies to interval() only")
    values = list(override.sweep_iterator())
    bad = [v for v in values if not isinstance(v, (str, int, float, bool))]
    if bad:
        raise SweepConfigError(f"{override.input_line}: choices must be strings or numbers, not {bad[0]!r}")
    return CategoricalDistribution(values)


def _range(override: Override, sweep: RangeSweep) -> BaseDistribution:
    if "log" in sweep.tags:
        raise SweepConfigError(f"{override.input_line}: tag(log, ...) applies to interval() only")
    values = sorted(sweep.range())  # shuffle(...) is irrelevant: the sampler picks the order
    if not values:
        raise SweepConfigError(f"{override.input_line}: the range is empty")
    step = abs(sweep.step)
    if all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step)):
        return IntDistribution(values[0], values[-1], step=step)
    # high from the count, rounded: 0.1 + 2 * 0.1 is 0.30000000000000004, which Optuna would cut back to 0.2
    high = round(values[0] + (len(values) - 1) * step, 12)
    return FloatDistribution(float(values[0]), high, step=float(step))


def _interval(sweep: IntervalSweep) -> BaseDistribution:
    log = "log" in sweep.tags
    if isinstance(sweep.start, int) and isinstance(sweep.end, int):
        return IntDistribution(sweep.start, sweep.end, log=log)
    return FloatDistribution(float(sweep.start), float(sweep.end), log=log)


def override_value(value: Any) -> str:
    """A sampled value as Hydra override text that parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return repr(value) if isinstance(value, float) else str(value)
    if _PLAIN.match(value) and _parse(f"key={value}").value() == value:  # "3" or "null" would read back as others
        return value
    # Hydra's quoted strings: a quote is escaped by a backslash, and backslashes right before a quote are doubled
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value) + "'"


def grid_of(distributions: Dict[str, BaseDistribution]) -> Dict[str, List[Any]]:
    """Every value of each (discrete) distribution, for Optuna's GridSampler."""
    grid = {}
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[name] = [round(dist.low + i * dist.step, 12) for i in range(count)]
        else:
            raise SweepConfigError(f"hydra.sweeper.params.{name}: the grid sampler needs a discrete range, not {dist}")
    return grid
