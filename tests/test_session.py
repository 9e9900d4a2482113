"""The session: one eviction rule for everything that outlives a job (least recently used, evicted before a new
entry is made), and a fresh session per process."""

from __future__ import annotations

import pickle

import pytest

from specsweep.session import Session


def test_a_slot_evicts_the_least_recently_used_before_making_a_new_entry():
    events = []
    slot = Session().slot("models", capacity=2, close=lambda value: events.append(f"close {value}"))

    def make(name):
        def build():
            events.append(f"make {name} holding {sorted(slot.keys())}")
            return name

        return build

    assert slot.get_or_create("target", make("target")) == "target"
    assert slot.get_or_create("draft", make("draft")) == "draft"
    assert slot.get_or_create("target", make("target")) == "target"  # a hit: nothing made, target is now recent
    slot.get_or_create("other", make("other"))
    # the draft (least recently used) was closed *before* the new entry was made, so at most 2 were ever held
    assert events == [
        "make target holding []",
        "make draft holding ['target']",
        "close draft",
        "make other holding ['target']",
    ]
    assert sorted(slot.keys()) == ["other", "target"]
    assert slot.created == {"target": 1, "draft": 1, "other": 1}


def test_put_take_and_close_follow_the_same_rule():
    closed = []
    session = Session()
    engines = session.slot("engines", capacity=1, close=closed.append)
    engines.put("a", "engine-a")
    engines.put("b", "engine-b")  # over capacity: a is stopped
    assert closed == ["engine-a"] and engines.keys() == ["b"]
    assert engines.take("b") == "engine-b" and closed == ["engine-a"]  # taken, not closed: the caller owns it
    engines.put("b", "engine-b")
    session.close()
    assert closed == ["engine-a", "engine-b"] and len(engines) == 0


def test_a_slot_is_made_once_and_a_session_pickles_empty():
    session = Session()
    assert session.slot("x", capacity=3) is session.slot("x")
    session.slot("x").put("k", object())
    clone = pickle.loads(pickle.dumps(session))  # what a pickling launcher (submitit) ships to each job
    assert "k" in session.slot("x") and "k" not in clone.slot("x")
    with pytest.raises(ValueError, match="capacity=0"):
        Session().slot("bad", capacity=0)
