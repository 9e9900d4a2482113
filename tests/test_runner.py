"""The runner with a fake engine and a fixed clock: pairing by prompt, the speedup arithmetic, baseline reuse, and a
lossless check that catches a planted divergence. Every number below follows from the clock, so it is exact."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Dict, List

import pytest

from specsweep.backends.base import Backend
from specsweep.config.compose import compose_config
from specsweep.core import AcceptanceCounts, Generation, Prompt
from specsweep.energy import NoEnergyMeter
from specsweep.measure import runner
from specsweep.session import Session

PROMPTS = [Prompt("p1", "code", "one"), Prompt("p2", "chat", "two"), Prompt("p3", "qa", "three")]
TOKENS = {"p1": 40, "p2": 20, "p3": 10}
# seconds per output token: the baseline is slow on p1, fast on p3; speculation halves p1 and leaves p3 as it is
BASE_S = {"p1": 0.10, "p2": 0.05, "p3": 0.02}
SPEC_S = {"p1": 0.05, "p2": 0.025, "p3": 0.02}


class Clock:
    def __init__(self):
        self.start = self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


class FakeEngine(Backend):
    """Generates fixed token ids and advances the clock by tokens x its per-token time."""

    name = "fake"

    def __init__(self, clock: Clock, per_token: Dict[str, float], speculative: bool, diverge: Dict[str, int], **seen):
        self.clock, self.per_token, self.speculative, self.diverge = clock, per_token, speculative, diverge
        self.generation, self.backend = SimpleNamespace(chat_template=False), SimpleNamespace(dtype="float32")
        self.calls = seen.get("calls")  # (base|spec, prompt id) of every measured generate, in order
        self.slowdown = seen.get("slowdown", 0.0)  # the machine gets this much slower per second of clock time

    def load(self) -> None:
        pass

    def environment(self):
        return {"engine": "fake"}

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        out = []
        for p in prompts:
            ids = list(range(TOKENS[p.id]))
            if p.id in self.diverge:
                ids[self.diverge[p.id]] = -1  # a planted divergence from the baseline's output
            wall = TOKENS[p.id] * self.per_token[p.id] * (1 + self.slowdown * (self.clock.now - self.clock.start))
            self.clock.now += wall
            if self.calls is not None:
                self.calls.append(("spec" if self.speculative else "base", p.id))
            counts = AcceptanceCounts(drafted=8, accepted=6, num_drafts=2, accepted_per_position=[2, 2, 1, 1])
            out.append(Generation(p.id, 5, ids, wall, self.per_token[p.id], counts if self.speculative else None))
        return out


@pytest.fixture
def setup(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(runner, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    builds = []

    def build(diverge=None, **seen):
        def build_engine(cfg):
            speculative = cfg.speculation.method != "none"
            builds.append(str(cfg.speculation.method))
            return FakeEngine(
                clock, SPEC_S if speculative else BASE_S, speculative, (diverge or {}) if speculative else {}, **seen
            )

        return build_engine

    cfg = compose_config(["speculation=ngram", "measurement.warmup=0", "measurement.repetitions=2", "energy=none"])
    return cfg, build, builds


@pytest.mark.parametrize("pairing", ["interleaved", "phased"])
def test_pairing_by_prompt_and_the_speedup_arithmetic(setup, pairing):
    cfg, build, _ = setup
    cfg.measurement.pairing = pairing
    sections = runner.run(cfg, PROMPTS, build(), NoEnergyMeter(), Session())
    rows = {r.id: r for r in sections.per_prompt}
    for pid in TOKENS:  # each prompt is paired with its own baseline
        assert rows[pid].tokens_per_s == pytest.approx(1 / SPEC_S[pid])
        assert rows[pid].baseline_tokens_per_s == pytest.approx(1 / BASE_S[pid])
        assert rows[pid].speedup == pytest.approx(BASE_S[pid] / SPEC_S[pid])
    spec_wall = 2 * sum(TOKENS[p] * SPEC_S[p] for p in TOKENS)
    base_wall = 2 * sum(TOKENS[p] * BASE_S[p] for p in TOKENS)
    m = sections.metrics
    assert m.output_tokens == 2 * 70 and m.wall_s == pytest.approx(spec_wall)
    assert m.speedup == pytest.approx((140 / spec_wall) / (140 / base_wall))  # token-weighted, not a mean of ratios
    assert sections.stats.speedup.median == pytest.approx(2.0)  # per-prompt speedups 2, 2, 1
    assert m.acceptance_rate == pytest.approx(36 / 48) and m.mean_acceptance_length == pytest.approx(1 + 36 / 12)


def test_phased_the_baseline_is_reused_in_a_session_and_measured_again_in_a_new_one(setup):
    cfg, build, builds = setup
    cfg.measurement.pairing = "phased"
    session = Session()
    first = runner.run(cfg, PROMPTS, build(), NoEnergyMeter(), session)
    assert first.baseline.measured_in_job and builds == ["none", "ngram"]
    cfg.speculation.num_speculative_tokens = 2  # another job of the sweep, same baseline key
    second = runner.run(cfg, PROMPTS, build(), NoEnergyMeter(), session)
    assert not second.baseline.measured_in_job and second.baseline.key == first.baseline.key
    assert builds == ["none", "ngram", "ngram"]  # no second baseline engine
    assert second.metrics.baseline_tokens_per_s == pytest.approx(first.metrics.baseline_tokens_per_s)
    runner.run(cfg, PROMPTS, build(), NoEnergyMeter(), Session())
    assert builds[-2:] == ["none", "ngram"]
    assert second.baseline.pairing == "phased" and second.baseline.pairing_reason == "measurement.pairing=phased"


def test_interleaved_alternates_who_goes_first_and_measures_its_own_baseline_every_job(setup):
    cfg, build, builds = setup
    session = Session()
    calls = []
    runner.run(cfg, PROMPTS, build(calls=calls), NoEnergyMeter(), session)
    first_rep = [("base", "p1"), ("spec", "p1"), ("spec", "p2"), ("base", "p2"), ("base", "p3"), ("spec", "p3")]
    second_rep = [("spec", "p1"), ("base", "p1"), ("base", "p2"), ("spec", "p2"), ("spec", "p3"), ("base", "p3")]
    assert calls == first_rep + second_rep
    second = runner.run(cfg, PROMPTS, build(), NoEnergyMeter(), session)
    assert second.baseline.measured_in_job and builds == ["none", "ngram", "none", "ngram"]
    assert second.baseline.pairing == "interleaved" and "holds the baseline and the speculative engine" in (
        second.baseline.pairing_reason
    )


def test_interleaving_keeps_a_machine_slowing_down_out_of_the_speedup(setup):
    """The machine slows down steadily while a job runs (thermal throttling, a neighbour's load): phased pairing
    charges the slowdown to the phase that runs second; interleaved pairing spreads it over both sides."""
    cfg, build, _ = setup
    true_speedup = runner.run(cfg, PROMPTS, build(), NoEnergyMeter(), Session()).metrics.speedup
    measured = {}
    for pairing in ("phased", "interleaved"):
        cfg.measurement.pairing = pairing
        measured[pairing] = runner.run(cfg, PROMPTS, build(slowdown=0.05), NoEnergyMeter(), Session()).metrics.speedup
    assert measured["phased"] < 0.9 * true_speedup  # the later, slower speculative phase looks worse than it is
    assert measured["interleaved"] == pytest.approx(true_speedup, rel=0.05)


def test_the_lossless_check_finds_a_planted_divergence(setup):
    cfg, build, _ = setup
    sections = runner.run(cfg, PROMPTS, build(diverge={"p2": 3}), NoEnergyMeter(), Session())
    lossless = sections.lossless
    assert lossless.checked and lossless.prompts == 3 and lossless.match_rate == pytest.approx(2 / 3)
    assert [(m.id, m.first_mismatch) for m in lossless.mismatches] == [("p2", 3)]
    assert {r.id: r.first_mismatch for r in sections.per_prompt} == {"p1": None, "p2": 3, "p3": None}
