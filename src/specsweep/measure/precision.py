"""How precisely a job measured its speedup: each repetition is a paired round (every prompt, on both sides), its
speedup that round's tokens/s over its baseline's; the job's precision is the Student-t interval of their mean.
With measurement.target_ci, interleaved rounds go on until that interval's half-width, relative to the mean, is at
most the target, or measurement.max_repetitions are spent (measure/phases.py runs the rounds)."""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

from specsweep.core import ratio
from specsweep.measure import metrics
from specsweep.measure.phases import Phase
from specsweep.results.types import Precision

# A side whose throughput varies more than this between rounds was probably disturbed (another process on the
# cores): on an idle machine rounds agree within a few percent (docs/results.md).
DISTURBED = 0.2

PHASED_NOTE = (
    "phased pairing: each side was measured in one phase of measurement.repetitions rounds, so rounds were not "
    "added toward measurement.target_ci"
)


def round_speedups(speculative: Phase, base: Phase) -> List[float]:
    """The speedup of each round measured on both sides: its output tokens over its windows' wall time, each side."""
    rounds = min(len(speculative.generations), len(base.generations))
    return [
        r
        for i in range(rounds)
        if (r := ratio(_round_rate(speculative, i), _round_rate(base, i))) is not None and math.isfinite(r)
    ]


def _round_rate(phase: Phase, i: int) -> Optional[float]:
    per_round = len(phase.batch_walls) // max(1, len(phase.generations))
    wall = sum(phase.batch_walls[i * per_round : (i + 1) * per_round])
    return ratio(sum(metrics.output_tokens(g) for g in phase.generations[i]), wall)


def disturbance(speculative: Phase, base: Phase) -> List[str]:
    """A warning per side whose per-round throughput (tokens/s) varied by more than DISTURBED."""
    warnings = []
    for phase in (base, speculative):
        rates = [r for i in range(len(phase.generations)) if (r := _round_rate(phase, i))]
        if len(rates) >= 2 and max(rates) / min(rates) - 1 > DISTURBED:
            warnings.append(
                f"the {phase.label} side's throughput varied {max(rates) / min(rates) - 1:.0%} between rounds "
                f"({min(rates):.3g}-{max(rates):.3g} tok/s): was the machine shared? Measure again on an idle one"
            )
    return warnings


def interval(values: List[float], confidence: float) -> Tuple[Optional[float], Optional[float], Optional[float]]:
    """(mean, low, high): the Student-t interval of the mean (bounds None below 2 values)."""
    if not values:
        return None, None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None, None
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def relative_half_width(values: List[float], confidence: float) -> Optional[float]:
    mean, low, high = interval(values, confidence)
    return None if low is None or not mean else (high - low) / 2 / abs(mean)


def stop_rule(cfg) -> Optional[Callable[[Dict[str, Phase]], bool]]:
    """phases -> whether the speedup is already as precise as measurement.target_ci asks (None: no target)."""
    target, confidence = cfg.measurement.target_ci, cfg.measurement.confidence
    if target is None:
        return None

    def precise(phases: Dict[str, Phase]) -> bool:  # every speculative side (measurement.compare_k's too)
        base = phases["baseline"]
        widths = [relative_half_width(round_speedups(p, base), confidence) for p in phases.values() if p is not base]
        return all(width is not None and width <= target for width in widths)

    return precise


def precision(cfg, speculative: Phase, base: Optional[Phase], pairing: Optional[str]) -> Optional[Precision]:
    """The job's Precision section (None without a paired baseline)."""
    if base is None:
        return None
    m = cfg.measurement
    values = round_speedups(speculative, base)
    mean, low, high = interval(values, m.confidence)
    width = relative_half_width(values, m.confidence)
    return Precision(
        rounds=len(values),
        round_speedups=values,
        mean=mean,
        ci_low=low,
        ci_high=high,
        half_width=width,
        confidence=m.confidence,
        target=m.target_ci,
        met=None if m.target_ci is None else (width is not None and width <= m.target_ci),
        note=PHASED_NOTE if m.target_ci is not None and pairing != "interleaved" else None,
        warnings=disturbance(speculative, base),
    )
