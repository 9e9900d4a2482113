"""An engine's spec-decode counters, read from a server's Prometheus `/metrics` text with prometheus_client's parser.

The counters are cumulative over the server's life (and summed over label sets: engines, models), so a measurement
window's counts are the difference of a reading after it and one before it (`after - before`, AcceptanceCounts).
Which families hold them is the engine's to say (`CounterNames`; vLLM's: `backends/vllm/counters.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from specsweep.core import AcceptanceCounts


@dataclass(frozen=True)
class CounterNames:
    """An engine's spec-decode counter families, as the parser names them (without `_total`)."""

    num_drafts: str  # verification steps that carried a draft
    drafted: str  # draft tokens proposed
    accepted: str  # draft tokens accepted
    per_position: str  # accepted tokens by draft position (label `position`: 0-based)

    def totals(self) -> Dict[str, str]:
        """family -> AcceptanceCounts field, for the three totals."""
        return {self.num_drafts: "num_drafts", self.drafted: "drafted", self.accepted: "accepted"}


class NoCounters(RuntimeError):
    """The server exposes no spec-decode counters (no speculation configured, or another engine's server)."""


def counters_from_text(text: str, names: CounterNames) -> AcceptanceCounts:
    """The cumulative counters in one /metrics reading; NoCounters when the text has none of them."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: Dict[str, float] = {}
    per_position: Dict[int, float] = {}
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name in names.totals():
            seen = True
            for sample in family.samples:
                if sample.name.endswith("_total"):  # skip the `_created` timestamps
                    totals[family.name] = totals.get(family.name, 0.0) + sample.value
        elif family.name == names.per_position:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    position = int(sample.labels["position"])
                    per_position[position] = per_position.get(position, 0.0) + sample.value
    if not seen:
        raise NoCounters(f"the server's /metrics has no {names.num_drafts} counter")
    counts = AcceptanceCounts(**{field: int(totals.get(name, 0)) for name, field in names.totals().items()})
    width = max(per_position) + 1 if per_position else 0
    counts.accepted_per_position = [int(per_position.get(i, 0)) for i in range(width)]
    return counts


def read_counters(url: str, names: CounterNames, timeout_s: float = 30.0) -> AcceptanceCounts:
    import httpx

    response = httpx.get(url.rstrip("/") + "/metrics", timeout=timeout_s)
    response.raise_for_status()
    return counters_from_text(response.text, names)
