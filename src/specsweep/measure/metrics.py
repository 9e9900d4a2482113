"""One definition per metric, shared by every backend: acceptance, throughput, latency, spread."""

from __future__ import annotations

import math
from statistics import median
from typing import Dict, List, Optional, Sequence

import numpy as np

from specsweep.backends.base import AcceptanceCounts, Generation


def acceptance_metrics(counts: Optional[AcceptanceCounts]) -> Dict[str, object]:
    """acceptance_rate = accepted / drafted; mean_acceptance_length = 1 + accepted / num_drafts (bonus token
    included, as vLLM defines it); acceptance_per_position[i] = P(draft token i accepted | a draft step)."""
    if counts is None or counts.num_drafts == 0:
        return {
            "acceptance_rate": None,
            "mean_acceptance_length": None,
            "acceptance_per_position": [],
            "drafted_tokens": counts.drafted if counts else None,
            "accepted_tokens": counts.accepted if counts else None,
            "num_drafts": counts.num_drafts if counts else None,
        }
    return {
        "acceptance_rate": counts.accepted / counts.drafted,
        "mean_acceptance_length": 1 + counts.accepted / counts.num_drafts,
        "acceptance_per_position": [n / counts.num_drafts for n in counts.accepted_per_position],
        "drafted_tokens": counts.drafted,
        "accepted_tokens": counts.accepted,
        "num_drafts": counts.num_drafts,
    }


def tokens_per_s(gen: Generation) -> float:
    return len(gen.output_ids) / gen.wall_s if gen.wall_s > 0 else math.nan


def tpot_s(gen: Generation) -> Optional[float]:
    """Time per output token after the first: (wall - ttft) / (tokens - 1)."""
    if gen.ttft_s is None or len(gen.output_ids) < 2:
        return None
    return (gen.wall_s - gen.ttft_s) / (len(gen.output_ids) - 1)


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
