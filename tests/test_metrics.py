"""The measurement's metrics (`measure/metrics.py`): acceptance as vLLM defines it, the spread of repeated
measurements, the first mismatching token."""

from __future__ import annotations

import pytest

from specsweep.core import AcceptanceCounts
from specsweep.measure import metrics


def test_acceptance_counts_follow_vllm_definitions():
    counts = AcceptanceCounts()
    counts.record_step(drafted=4, accepted=4)
    counts.record_step(drafted=4, accepted=1)
    counts.record_step(drafted=0, accepted=0)  # no draft this step: not a draft step
    counts.record_step(drafted=4, accepted=0)
    m = metrics.acceptance_metrics(counts)
    assert m["drafted_tokens"] == 12 and m["accepted_tokens"] == 5 and m["num_drafts"] == 3
    assert m["acceptance_rate"] == pytest.approx(5 / 12)
    assert m["mean_acceptance_length"] == pytest.approx(1 + 5 / 3)
    assert m["acceptance_per_position"] == pytest.approx([2 / 3, 1 / 3, 1 / 3, 1 / 3])
    # given the tokens before it were accepted: 2 of 3 steps took token 1, 1 of those 2 took token 2, then 1 of 1
    assert m["acceptance_per_position_conditional"] == pytest.approx([2 / 3, 1 / 2, 1.0, 1.0])
    none_past_first = AcceptanceCounts(drafted=4, accepted=0, num_drafts=1, accepted_per_position=[0, 0])
    assert metrics.acceptance_metrics(none_past_first)["acceptance_per_position_conditional"] == [0.0, None]
    merged = counts + AcceptanceCounts(drafted=2, accepted=2, num_drafts=1, accepted_per_position=[1, 1])
    assert merged.accepted_per_position == [3, 2, 1, 1] and merged.num_drafts == 4


def test_acceptance_metrics_without_drafts_are_null_not_zero():
    m = metrics.acceptance_metrics(None)
    assert m["acceptance_rate"] is None and m["mean_acceptance_length"] is None


def test_spread_reports_n_median_and_an_interval_that_contains_it():
    s = metrics.spread([1.0, 2.0, 3.0, 4.0, 100.0, None, float("nan")], 0.95)
    assert s["n"] == 5 and s["median"] == 3.0
    assert s["ci_low"] <= s["median"] <= s["ci_high"]
    assert metrics.spread([2.0, 3.0], 0.95)["ci_low"] is None  # too few for an interval
    assert metrics.spread([], 0.95)["median"] is None


def test_first_mismatch():
    assert metrics.first_mismatch([1, 2, 3], [1, 2, 3]) is None
    assert metrics.first_mismatch([1, 2, 3], [1, 9, 3]) == 1
    assert metrics.first_mismatch([1, 2], [1, 2, 3]) == 2
