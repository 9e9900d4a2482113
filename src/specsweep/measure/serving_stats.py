"""The `serving` section of a served job's result.json: per-request latency percentiles, throughput and goodput of
its phase and of its baseline under the same load (definitions in measure/metrics.py). The measurement builds it
for every engine that names it among its `Backend.extra_sections()` (served engines do)."""

from __future__ import annotations

from typing import Dict, Optional

from specsweep.core import ratio
from specsweep.measure import metrics
from specsweep.results.types import LoadStats, Percentiles, Serving
from specsweep.serving.openai import endpoint


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
        request_throughput=ratio(len(gens), duration),
        output_throughput=ratio(phase.output_tokens(), duration),
        mean_concurrency=ratio(sum(g.wall_s for g in gens), duration),
        ttft_s=Percentiles(**metrics.percentiles([g.ttft_s for g in gens])),
        itl_s=Percentiles(**metrics.percentiles([gap for g in gens for gap in g.itl_s or []])),
        tpot_s=Percentiles(**metrics.percentiles([metrics.tpot_s(g) for g in gens])),
        e2e_s=Percentiles(**metrics.percentiles([g.wall_s for g in gens])),
        queued_s=Percentiles(**metrics.percentiles([g.queued_s for g in gens])),
        goodput=ratio(good, duration),
        goodput_fraction=ratio(good, len(gens)),
    )


def serving_section(cfg, phase, base_phase, acceptance: Dict[str, Optional[str]]) -> Serving:
    """The load this job ran under and its phases' load stats; acceptance: the engine's `acceptance_facts()`."""
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
