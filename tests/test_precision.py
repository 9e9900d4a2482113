"""measurement.target_ci: repetitions go on, in interleaved rounds, until the paired speedup's interval is as narrow
as asked, or measurement.max_repetitions are spent; result.json says how many rounds, the width reached and whether
the target was met. Fake engines on a fixed clock whose noise is a seeded draw: every width follows from the walls."""

from __future__ import annotations

import math
import random
import re

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


class NoisyByK(FakeEngine):
    """Each engine draws its own noise, seeded by its k (the baseline: 0)."""

    def __init__(self, cfg, engines):
        super().__init__(cfg, engines)
        self.rng = random.Random(cfg.speculation.num_speculative_tokens or 0)


def run_compared(clock, *overrides: str, noise: float = 0.0):
    """ngram at k=4 (0.01 s per token) compared with k=2 (0.0125 s) and k=8 (0.02 s); the baseline 0.02 s."""
    cfg = compose_config(
        ["speculation=ngram", "speculation.num_speculative_tokens=4", "measurement.compare_k=[2,8]", "energy=none"]
        + ["measurement.warmup=0", "measurement.pairing=interleaved", *overrides]
    )
    per_k = {None: 0.02, 4: 0.01, 2: 0.0125, 8: 0.02}
    per_token = lambda cfg, p: per_k[cfg.speculation.num_speculative_tokens]  # noqa: E731
    engines = FakeEngines(per_token_s=per_token, clock=clock, noise=noise, engine=NoisyByK)
    return runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), Session()), engines


def test_compare_k_measures_more_k_values_in_the_same_round_robin_against_the_same_baseline(clock):
    sections, engines = run_compared(clock, "measurement.repetitions=3")
    assert engines.most_open == 4  # the baseline, the job's k and the two compared, all open at once
    assert sections.metrics.speedup == pytest.approx(2.0)
    assert [(c.k, round(c.metrics.speedup, 6)) for c in sections.compared] == [(2, 1.6), (8, 1.0)]
    for c in sections.compared:  # each paired with the job's own baseline, round by round
        assert c.metrics.baseline_tokens_per_s == sections.metrics.baseline_tokens_per_s
        assert c.paired_speedup.rounds == 3 and c.lossless.checked and c.lossless.match_rate == 1.0
    # 2 prompts x 3 rounds on each of the 4 engines, the one going first rotating
    assert len(engines.calls) == 2 * 3 * 4


def test_with_a_target_rounds_go_on_until_every_compared_k_is_as_precise_as_asked(clock):
    sections, _ = run_compared(
        clock, "measurement.repetitions=2", "measurement.target_ci=0.04", "measurement.max_repetitions=40", noise=0.1
    )
    sides = [sections.stats.paired_speedup, *(c.paired_speedup for c in sections.compared)]
    assert all(side.met and side.half_width <= 0.04 for side in sides)
    rounds = sides[0].rounds
    assert all(side.rounds == rounds for side in sides) and rounds > 2
    # one round fewer, some side was still wider than the target: it stopped at the first n where none was
    assert max(width(side.round_speedups[:-1]) for side in sides) > 0.04
    assert sections.timing.generation_s == pytest.approx(clock.now - clock.start, rel=0.01)


def test_compare_k_is_refused_where_it_cannot_share_the_jobs_baseline():
    cases = {
        "measurement.pairing=phased": "with phased pairing",
        "measurement.compare_k=[5]": "k values other than the job's own",
        "measurement.compare_k=[2,2]": "distinct k values in [1, 64]",
        "measurement.baseline=false": "without speculation or measurement.baseline",
    }
    for override, allowed in cases.items():
        cfg = compose_config(["speculation.num_speculative_tokens=5", "measurement.compare_k=[3]", override])
        with pytest.raises(
            ConfigError, match=r"^measurement.compare_k=\[.*\] is invalid: expected .*" + re.escape(allowed)
        ):
            validate(cfg)
    # a k the backend itself refuses, named with the reason: llama.cpp's prompt lookup drafts at least ngram_max
    cfg = compose_config(["speculation=ngram", "speculation.ngram_max=3", "measurement.compare_k=[2]"])
    with pytest.raises(ConfigError, match=r"^measurement.compare_k=\[2\] is invalid: expected .*at k=2: "):
        validate(cfg)
