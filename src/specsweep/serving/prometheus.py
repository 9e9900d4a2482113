"""vLLM's spec-decode counters, read from a server's Prometheus `/metrics` text with prometheus_client's parser.

The counters are cumulative over the server's life (and summed over label sets: engines, models), so a measurement
window's counts are the difference of a reading after it and one before it.
"""

from __future__ import annotations

from typing import Dict

from specsweep.core import AcceptanceCounts

# Counter family (as the parser names it: without `_total`) -> AcceptanceCounts field.
COUNTERS = {
    "vllm:spec_decode_num_drafts": "num_drafts",
    "vllm:spec_decode_num_draft_tokens": "drafted",
    "vllm:spec_decode_num_accepted_tokens": "accepted",
}
PER_POSITION = "vllm:spec_decode_num_accepted_tokens_per_pos"  # label `position`: 0-based draft position


class NoCounters(RuntimeError):
    """The server exposes no spec-decode counters (no speculation configured, or not a vLLM server)."""


def counters_from_text(text: str) -> AcceptanceCounts:
    """The cumulative counters in one /metrics reading; NoCounters when the text has none of them."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: Dict[str, float] = {}
    per_position: Dict[int, float] = {}
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name in COUNTERS:
            seen = True
            for sample in family.samples:
                if sample.name.endswith("_total"):  # skip the `_created` timestamps
                    totals[family.name] = totals.get(family.name, 0.0) + sample.value
        elif family.name == PER_POSITION:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    position = int(sample.labels["position"])
                    per_position[position] = per_position.get(position, 0.0) + sample.value
    if not seen:
        raise NoCounters("the server's /metrics has no vllm:spec_decode_* counters")
    counts = AcceptanceCounts(**{field: int(totals.get(name, 0)) for name, field in COUNTERS.items()})
    width = max(per_position) + 1 if per_position else 0
    counts.accepted_per_position = [int(per_position.get(i, 0)) for i in range(width)]
    return counts


def difference(after: AcceptanceCounts, before: AcceptanceCounts) -> AcceptanceCounts:
    """The counts of the window between two readings."""
    width = max(len(after.accepted_per_position), len(before.accepted_per_position))
    a = after.accepted_per_position + [0] * (width - len(after.accepted_per_position))
    b = before.accepted_per_position + [0] * (width - len(before.accepted_per_position))
    return AcceptanceCounts(
        drafted=after.drafted - before.drafted,
        accepted=after.accepted - before.accepted,
        num_drafts=after.num_drafts - before.num_drafts,
        accepted_per_position=[x - y for x, y in zip(a, b)],
    )


def read_counters(url: str, timeout_s: float = 30.0) -> AcceptanceCounts:
    import httpx

    response = httpx.get(url.rstrip("/") + "/metrics", timeout=timeout_s)
    response.raise_for_status()
    return counters_from_text(response.text)
