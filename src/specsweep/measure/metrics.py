"""One definition per metric, shared by every backend: acceptance, throughput, latency, spread."""

from __future__ import annotations

import math
from statistics import median
from typing import Dict, List, Optional, Sequence

import numpy as np

from specsweep.core import AcceptanceCounts, Generation


def acceptance_metrics(counts: Optional[AcceptanceCounts]) -> Dict[str, object]:
    """acceptance_rate = accepted / drafted; mean_acceptance_length = 1 + accepted / num_drafts (bonus token
    included, as vLLM defines it); acceptance_per_position[i] = P(draft token i accepted | a draft step), and
    acceptance_per_position_conditional[i] = P(token i accepted | tokens before it accepted), as Model-Optimizer's
    specdec_bench reports both (a step that drafted fewer tokens counts as not accepted at i: where drafts vary in
    length, a lower bound)."""
    if counts is None or counts.num_drafts == 0:
        return {
            "acceptance_rate": None,
            "mean_acceptance_length": None,
            "acceptance_per_position": [],
            "acceptance_per_position_conditional": [],
            "drafted_tokens": counts.drafted if counts else None,
            "accepted_tokens": counts.accepted if counts else None,
            "num_drafts": counts.num_drafts if counts else None,
        }
    return {
        "acceptance_rate": counts.accepted / counts.drafted,
        "mean_acceptance_length": 1 + counts.accepted / counts.num_drafts,
        "acceptance_per_position": [n / counts.num_drafts for n in counts.accepted_per_position],
        "acceptance_per_position_conditional": _conditional(counts.accepted_per_position, counts.num_drafts),
        "drafted_tokens": counts.drafted,
        "accepted_tokens": counts.accepted,
        "num_drafts": counts.num_drafts,
    }


def _conditional(accepted_at: List[int], steps: int) -> List[Optional[float]]:
    """Item i: steps that accepted token i over steps that accepted every token before it (None: none did)."""
    before = [steps, *accepted_at[:-1]]
    return [n / d if d else None for n, d in zip(accepted_at, before)]


def output_tokens(gen: Generation) -> int:
    """Tokens generated: the engine's own count where it gives one beside re-encoded output ids, else the ids."""
    return gen.token_count if gen.token_count is not None else len(gen.output_ids)


def tokens_per_s(gen: Generation) -> float:
    return output_tokens(gen) / gen.wall_s if gen.wall_s > 0 else math.nan


def tpot_s(gen: Generation) -> Optional[float]:
    """Time per output token after the first: (wall - ttft) / (tokens - 1)."""
    if gen.ttft_s is None or output_tokens(gen) < 2:
        return None
    return (gen.wall_s - gen.ttft_s) / (output_tokens(gen) - 1)


def median_known(values: Sequence[Optional[float]]) -> float:
    """Median of the known values; NaN (written as null) when none is known."""
    return median([v for v in values if v is not None] or [float("nan")])


def percentiles(values: Sequence[Optional[float]]) -> Dict[str, object]:
    """n, mean, and the 50th, 90th and 99th percentiles (linear interpolation) of the known values."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = (float(x) for x in np.percentile(xs, [50, 90, 99]))
    return {"n": len(xs), "mean": float(np.mean(xs)), "p50": p50, "p90": p90, "p99": p99}


def meets_slo(gen: Generation, ttft_limit: Optional[float], tpot_limit: Optional[float]) -> bool:
    """Goodput's test: time to first token and time per output token within their limits (None: no limit). A
    one-token output has no TPOT and passes that limit."""
    if ttft_limit is not None and (gen.ttft_s is None or gen.ttft_s > ttft_limit):
        return False
    tpot = tpot_s(gen)
    return tpot_limit is None or tpot is None or tpot <= tpot_limit


def spread(values: Sequence[Optional[float]], confidence: float) -> Dict[str, object]:
    """n, median, mean and a percentile-bootstrap interval of the median (None when n < 3)."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    out: Dict[str, object] = {"n": len(xs), "median": None, "mean": None, "ci_low": None, "ci_high": None}
    if not xs:
        return out
    out["median"], out["mean"] = median(xs), float(np.mean(xs))
    if len(xs) >= 3 and max(xs) > min(xs):
        from scipy.stats import bootstrap

        res = bootstrap(
            (np.asarray(xs),),
            np.median,
            confidence_level=confidence,
            n_resamples=2000,
            method="percentile",
            random_state=0,
        )
        out["ci_low"], out["ci_high"] = float(res.confidence_interval.low), float(res.confidence_interval.high)
    elif len(xs) >= 3:
        out["ci_low"] = out["ci_high"] = xs[0]
    out["confidence"] = confidence
    return out


def first_mismatch(a: List[int], b: List[int]) -> Optional[int]:
    """Index of the first differing token (length difference counts), None when identical."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
