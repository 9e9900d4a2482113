"""AcceptanceCounts' own arithmetic (specsweep.core): sums of generations, windows between counter readings."""

from __future__ import annotations

from specsweep.core import AcceptanceCounts, total_acceptance


def test_a_window_is_the_later_reading_minus_the_earlier_one_position_by_position():
    before = AcceptanceCounts(drafted=10, accepted=6, num_drafts=4, accepted_per_position=[4, 2])
    after = AcceptanceCounts(drafted=25, accepted=14, num_drafts=9, accepted_per_position=[8, 4, 2])
    window = after - before
    assert (window.drafted, window.accepted, window.num_drafts) == (15, 8, 5)
    assert window.accepted_per_position == [4, 2, 2]  # the shorter reading counts as zeros past its end
    assert window + before == AcceptanceCounts(25, 14, 9, [8, 4, 2])


def test_same_totals_ignores_trailing_zero_positions_and_steps_but_not_counts():
    a = AcceptanceCounts(5, 3, 2, [2, 1], steps=[(3, 2), (2, 1)])
    assert a.same_totals(AcceptanceCounts(5, 3, 2, [2, 1, 0]))
    assert not a.same_totals(AcceptanceCounts(5, 3, 2, [2, 0, 1]))
    assert not a.same_totals(AcceptanceCounts(5, 2, 2, [2, 1]))
    assert not a.same_totals(None)


def test_counters_that_went_backwards_are_recognised():
    earlier = AcceptanceCounts(20, 12, 6, [6, 4, 2])
    assert not AcceptanceCounts(20, 12, 6, [6, 4, 2]).went_backwards(earlier)
    assert not AcceptanceCounts(30, 15, 9, [9, 4, 2]).went_backwards(earlier)
    assert AcceptanceCounts(3, 1, 1, [1]).went_backwards(earlier)  # a restarted server counts from zero again
    assert AcceptanceCounts(30, 15, 9, [9, 3, 2]).went_backwards(earlier)


def test_total_of_generations_skips_unknown_counts():
    steps = AcceptanceCounts()
    steps.record_step(3, 2)
    steps.record_step(3, 0)
    total = total_acceptance([None, steps, AcceptanceCounts(2, 2, 1, [1, 1], steps=[(2, 2)])])
    assert (total.drafted, total.accepted, total.num_drafts, total.accepted_per_position) == (8, 4, 3, [2, 2, 0])
    assert total.steps == [(3, 2), (3, 0), (2, 2)]
    assert total_acceptance([None, None]) is None
