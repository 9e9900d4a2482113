"""measurement.target_ci: repetitions go on, in interleaved rounds, until the paired speedup's interval is as narrow
as asked, or measurement.max_repetitions are spent; result.json says how many rounds, the width reached and whether
the target was met. Fake engines on a fixed clock whose noise is a seeded draw: every width follows from the walls."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from fakes import FakeClock, FakeEngine, FakeEngines
from specsweep.config.compose import compose_config
from specsweep.config.validate import ConfigError, validate
from specsweep.core import Prompt
from specsweep.energy import NoEnergyMeter
from specsweep.measure import phases, precision, runner
from specsweep.session import Session

PROMPTS = [Prompt("p1", "code", "one"), Prompt("p2", "chat", "two")]


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(phases, "time", clock)
    return clock


class NoisyEngine(FakeEngine):
    """Each side draws its own noise (the fake's default seeds both alike, so their ratio would not vary)."""

    def __init__(self, cfg, engines):
        super().__init__(cfg, engines)
        self.rng = random.Random(1 if self.speculative else 2)


def run(clock, *overrides: str, noise: float = 0.1, slowdown: float = 0.0):
    cfg = compose_config(
        ["speculation=ngram", "measurement.warmup=0", "energy=none", "measurement.pairing=interleaved", *overrides]
    )
    per_token = lambda cfg, p: 0.01 if cfg.speculation.method != "none" else 0.02  # noqa: E731
    engines = FakeEngines(per_token_s=per_token, clock=clock, noise=noise, engine=NoisyEngine, slowdown=slowdown)
    return runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), Session()).stats.paired_speedup


def width(values) -> float:
    """The relative half-width of the t-interval of the mean, computed here independently of measure/precision.py."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) / mean


def test_rounds_go_on_until_the_interval_is_as_narrow_as_asked_and_stop_there(clock):
    got = run(clock, "measurement.repetitions=2", "measurement.target_ci=0.05", "measurement.max_repetitions=40")
    assert got.met is True and got.target == 0.05 and got.note is None
    assert got.rounds == len(got.round_speedups) > 2  # the noise needs more than the 2 asked
    assert width(got.round_speedups) <= 0.05 < width(got.round_speedups[:-1])  # it stopped at the first n that did
    assert got.half_width == pytest.approx(width(got.round_speedups))
    assert got.ci_low < got.mean < got.ci_high and got.mean == pytest.approx(2.0, rel=0.1)


def test_the_budget_stops_rounds_when_the_target_is_out_of_reach(clock):
    got = run(clock, "measurement.repetitions=2", "measurement.target_ci=0.0001", "measurement.max_repetitions=5")
    assert got.rounds == 5 and got.met is False and got.half_width > 0.0001


def test_without_a_target_exactly_the_repetitions_asked_and_the_precision_is_stated(clock):
    got = run(clock, "measurement.repetitions=3")
    assert got.rounds == 3 and got.target is None and got.met is None
    assert got.half_width == pytest.approx(width(got.round_speedups))


def test_a_noiseless_engine_meets_the_target_in_the_repetitions_asked(clock):
    got = run(clock, "measurement.repetitions=2", "measurement.target_ci=0.01", noise=0.0)
    assert got.rounds == 2 and got.met is True and got.half_width == 0.0


def test_phased_pairing_reports_its_precision_and_says_it_added_no_rounds(clock):
    got = run(clock, "measurement.pairing=phased", "measurement.repetitions=3", "measurement.target_ci=0.0001")
    assert got.rounds == 3 and got.met is False and got.note == precision.PHASED_NOTE


def test_each_rounds_speedup_is_its_tokens_per_second_over_its_own_rounds_baseline(clock):
    got = run(clock, "measurement.repetitions=2", noise=0.0)
    assert got.round_speedups == pytest.approx([2.0, 2.0])
    # a machine slowing down: every round is slower than the last, each round's speedup stays about 2
    got = run(clock, "measurement.repetitions=4", noise=0.0, slowdown=0.5)
    assert got.round_speedups == pytest.approx([2.0] * 4, rel=0.1)


def test_max_repetitions_below_repetitions_is_refused_with_a_target():
    cfg = compose_config(["measurement.repetitions=4", "measurement.target_ci=0.03", "measurement.max_repetitions=3"])
    with pytest.raises(ConfigError, match=r"^measurement.max_repetitions=3 is invalid: expected >= measurement.rep"):
        validate(cfg)
    with pytest.raises(ConfigError, match=r"^measurement.target_ci=1.5 is invalid"):
        validate(compose_config(["measurement.target_ci=1.5"]))


def test_a_side_whose_throughput_varies_between_rounds_is_a_warning(clock):
    """Phased, on a machine that slows down: the baseline's rounds differ by far more than 20%, and the job says so;
    a steady machine gives no warning."""
    got = run(clock, "measurement.pairing=phased", "measurement.repetitions=3", noise=0.0, slowdown=5.0)
    assert got.warnings and got.warnings[0].startswith("the baseline side's throughput varied ")
    assert run(clock, "measurement.repetitions=3", noise=0.05).warnings == []
