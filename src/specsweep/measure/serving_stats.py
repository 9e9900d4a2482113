"""The `serving` section of a served job's result.json: per-request latency percentiles, throughput and goodput of
its phase and of its baseline under the same load (definitions in measure/metrics.py)."""

from __future__ import annotations

from typing import Dict, Optional

from specsweep.measure import metrics
from specsweep.results.types import LoadStats, Percentiles, Serving
from specsweep.serving.openai import endpoint


def _ratio(num, den) -> Optional[float]:
    return num / den if num is not None and den else None


def load_stats(phase, ttft_limit: Optional[float], tpot_limit: Optional[float]) -> LoadStats:
    """One phase's requests over its measured load runs (its timed windows)."""
    gens = phase.all()
    duration = phase.wall_s()
    good = None
    if ttft_limit is not None or tpot_limit is not None:
        good = sum(metrics.meets_slo(g, ttft_limit, tpot_limit) for g in gens)
    return LoadStats(
        requests=len(gens),
        duration_s=duration,
        request_throughput=_ratio(len(gens), duration),
        output_throughput=_ratio(phase.output_tokens(), duration),
        mean_concurrency=_ratio(sum(g.wall_s for g in gens), duration),
        ttft_s=Percentiles(**metrics.percentiles([g.ttft_s for g in gens])),
        itl_s=Percentiles(**metrics.percentiles([gap for g in gens for gap in g.itl_s or []])),
        tpot_s=Percentiles(**metrics.percentiles([metrics.tpot_s(g) for g in gens])),
        e2e_s=Percentiles(**metrics.percentiles([g.wall_s for g in gens])),
        queued_s=Percentiles(**metrics.percentiles([g.queued_s for g in gens])),
        goodput=_ratio(good, duration) if good is not None else None,
        goodput_fraction=_ratio(good, len(gens)) if good is not None else None,
    )


def serving_section(cfg, phase, base_phase, acceptance: Dict[str, Optional[str]]) -> Serving:
    limits = (cfg.measurement.slo_ttft_s, cfg.measurement.slo_tpot_s)
    return Serving(
        concurrency=cfg.generation.concurrency,
        request_rate=cfg.generation.request_rate,
        endpoint=endpoint(cfg.generation),
        slo_ttft_s=limits[0],
        slo_tpot_s=limits[1],
        speculative=load_stats(phase, *limits),
        baseline=load_stats(base_phase, *limits) if base_phase is not None else None,
        **acceptance,
    )
