"""vLLM's spec-decode counters, in one place: their names, read in-process (`LLM.get_metrics()`, the offline worker)
or from a server's /metrics text (backend=vllm_server, through `serving.prometheus`)."""

from __future__ import annotations

from specsweep.core import AcceptanceCounts
from specsweep.serving.prometheus import CounterNames

VLLM_COUNTERS = CounterNames(
    num_drafts="vllm:spec_decode_num_drafts",
    drafted="vllm:spec_decode_num_draft_tokens",
    accepted="vllm:spec_decode_num_accepted_tokens",
    per_position="vllm:spec_decode_num_accepted_tokens_per_pos",
)


def counters_from_metrics(metrics) -> AcceptanceCounts:
    """vLLM's cumulative spec-decode counters from `LLM.get_metrics()` (summed over label sets, e.g. data-parallel
    engines)."""
    totals, fields = AcceptanceCounts(), VLLM_COUNTERS.totals()
    for metric in metrics:
        if metric.name in fields:
            setattr(totals, fields[metric.name], getattr(totals, fields[metric.name]) + int(metric.value))
        elif metric.name == VLLM_COUNTERS.per_position:
            totals = totals + AcceptanceCounts(accepted_per_position=[int(v) for v in metric.values])
    return totals


def counts_from_request(histogram: list, num_draft_tokens: int, k: int) -> AcceptanceCounts:
    """One request's counts from vLLM's per-request histogram (histogram[j] = verify steps that accepted j drafts).

    Drafts are accepted as a prefix, so position i was accepted in every step that accepted more than i.
    """
    return AcceptanceCounts(
        drafted=num_draft_tokens,
        accepted=sum(j * n for j, n in enumerate(histogram)),
        num_drafts=sum(histogram),
        accepted_per_position=[sum(histogram[i + 1 :]) for i in range(k)],
    )
