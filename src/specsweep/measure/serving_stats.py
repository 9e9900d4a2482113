"""The `serving` section of a served job's result.json: per-request latency percentiles, throughput and goodput of
its phase and of its baseline under the same load (definitions in measure/metrics.py). The measurement builds it
for every engine that names it among its `Backend.extra_sections()` (served engines do)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from specsweep.core import ratio
from specsweep.measure import metrics
from specsweep.results.types import MAX_FAILURES_LISTED, LoadStats, Percentiles, RequestFailure, Serving
from specsweep.serving.openai import endpoint


def _accounting(ok: int, failures: List[Any]) -> Dict[str, Any]:
    """Every request of the phase's measured load runs: ok, failed (with the reason) or timed out."""
    timed_out = sum(f.outcome == "timed_out" for f in failures)
    return {
        "requests": ok + len(failures),
        "ok_requests": ok,
        "failed_requests": len(failures) - timed_out,
        "timed_out_requests": timed_out,
        "failure_rate": ratio(len(failures), ok + len(failures)),
        "failures": [RequestFailure(prompt_id=f.prompt_id, outcome=f.outcome, error=f.error) for f in failures][
            :MAX_FAILURES_LISTED
        ],
    }


def load_stats(phase, ttft_limit: Optional[float], tpot_limit: Optional[float]) -> LoadStats:
    """One phase's requests over its measured load runs (its timed windows): the figures over its ok requests (its
    generations), the failed and timed-out ones counted beside them."""
    gens = phase.all()
    duration = phase.wall_s()
    good = None
    if ttft_limit is not None or tpot_limit is not None:
        good = sum(metrics.meets_slo(g, ttft_limit, tpot_limit) for g in gens)
    return LoadStats(
        **_accounting(len(gens), phase.failures),
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
        goodput_fraction=ratio(good, len(gens) + len(phase.failures)),  # a request that failed met no limit
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
