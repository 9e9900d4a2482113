"""The runner with the fake engine and a fixed clock: pairing by prompt, the speedup arithmetic, baseline reuse, a
lossless check that catches a planted divergence, one engine per side (the cost model included), the served hooks,
and a result built once. Every number below follows from the clock, so it is exact."""

from __future__ import annotations

from typing import List

import pytest

from fakes import FakeClock, FakeEngine, FakeEngines, FakeMeter
from specsweep import app
from specsweep.config.compose import compose_config
from specsweep.core import Prompt
from specsweep.energy import NoEnergyMeter
from specsweep.measure import baseline, cost_model, phases, runner, summary, theory
from specsweep.models.resolve import draft_reference
from specsweep.session import Session

PROMPTS = [Prompt("p1", "code", "one"), Prompt("p2", "chat", "two"), Prompt("p3", "qa", "three")]
TOKENS = {"p1": 40, "p2": 20, "p3": 10}
# seconds per output token: the baseline is slow on p1, fast on p3; speculation halves p1 and leaves p3 as it is
BASE_S = {"p1": 0.10, "p2": 0.05, "p3": 0.02}
SPEC_S = {"p1": 0.05, "p2": 0.025, "p3": 0.02}
# timed forwards: t_verify(n) = 0.1 + 0.01 n, t_draft = 0.02 -> c = 0.02 / 0.11
FORWARD_S = {"draft": 0.02, **{n: 0.1 + 0.01 * n for n in range(1, 10)}}


def per_token(cfg, prompt: Prompt) -> float:
    return (SPEC_S if cfg.speculation.method != "none" else BASE_S)[prompt.id]


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(phases, "time", clock)  # the timed windows and the engine loads read this clock
    return clock


@pytest.fixture
def fakes(clock):
    def make(**settings) -> FakeEngines:
        return FakeEngines(**{"tokens": TOKENS, "per_token_s": per_token, "clock": clock, **settings})

    return make


def config(*overrides: str):
    return compose_config(
        ["speculation=ngram", "measurement.warmup=0", "measurement.repetitions=2", "energy=none"] + list(overrides)
    )


@pytest.mark.parametrize("pairing", ["interleaved", "phased"])
def test_pairing_by_prompt_and_the_speedup_arithmetic(fakes, pairing):
    cfg = config(f"measurement.pairing={pairing}")
    sections = runner.run(cfg, PROMPTS, fakes(), NoEnergyMeter(), Session())
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
    assert sections.timing.generation_s == pytest.approx(spec_wall + base_wall)
    # the baseline's engine config differs from the speculative engine's in the speculation settings, nothing else
    differences = sections.baseline.native_differences
    assert all(path.startswith("params.speculative.") for path in differences), differences
    assert differences["params.speculative.types"]["baseline"] == ["COMMON_SPECULATIVE_TYPE_NONE"]


def test_phased_the_baseline_is_reused_in_a_session_and_measured_again_in_a_new_one(fakes):
    cfg = config("measurement.pairing=phased")
    session, engines = Session(), fakes()
    first = runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), session)
    assert first.baseline.measured_in_job and engines.methods() == ["none", "ngram"]
    assert engines.most_open == 1  # phased: the baseline engine is closed before the speculative one is built
    cfg.speculation.num_speculative_tokens = 2  # another job of the sweep, same baseline key
    second = runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), session)
    assert not second.baseline.measured_in_job and second.baseline.key == first.baseline.key
    assert engines.methods() == ["none", "ngram", "ngram"]  # no second baseline engine
    assert second.metrics.baseline_tokens_per_s == pytest.approx(first.metrics.baseline_tokens_per_s)
    runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), Session())
    assert engines.methods()[-2:] == ["none", "ngram"]
    assert second.baseline.pairing == "phased" and second.baseline.pairing_reason == "measurement.pairing=phased"


def test_a_no_speculation_job_is_the_baseline_of_the_next_phased_job_with_its_key(fakes):
    session, engines = Session(), fakes()
    runner.run(config("speculation=none", "measurement.pairing=phased"), PROMPTS, engines, NoEnergyMeter(), session)
    paired = runner.run(config("measurement.pairing=phased"), PROMPTS, engines, NoEnergyMeter(), session)
    assert engines.methods() == ["none", "ngram"] and paired.baseline.source.startswith("reused")


def test_interleaved_alternates_who_goes_first_and_measures_its_own_baseline_every_job(fakes):
    cfg, session, engines = config(), Session(), fakes()
    runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), session)
    first_rep = [("base", "p1"), ("spec", "p1"), ("spec", "p2"), ("base", "p2"), ("base", "p3"), ("spec", "p3")]
    second_rep = [("spec", "p1"), ("base", "p1"), ("base", "p2"), ("spec", "p2"), ("spec", "p3"), ("base", "p3")]
    assert engines.calls == first_rep + second_rep
    second = runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), session)
    assert second.baseline.measured_in_job and engines.methods() == ["none", "ngram", "none", "ngram"]
    assert second.baseline.pairing == "interleaved" and "holds the baseline and the speculative engine" in (
        second.baseline.pairing_reason
    )


def test_interleaving_keeps_a_machine_slowing_down_out_of_the_speedup(fakes):
    """The machine slows down steadily while a job runs (thermal throttling, a neighbour's load): phased pairing
    charges the slowdown to the phase that runs second; interleaved pairing spreads it over both sides."""
    true_speedup = runner.run(config(), PROMPTS, fakes(), NoEnergyMeter(), Session()).metrics.speedup
    measured = {}
    for pairing in ("phased", "interleaved"):
        cfg = config(f"measurement.pairing={pairing}")
        measured[pairing] = runner.run(cfg, PROMPTS, fakes(slowdown=0.05), NoEnergyMeter(), Session()).metrics.speedup
    assert measured["phased"] < 0.9 * true_speedup  # the later, slower speculative phase looks worse than it is
    assert measured["interleaved"] == pytest.approx(true_speedup, rel=0.05)


def test_the_lossless_check_finds_a_planted_divergence(fakes):
    sections = runner.run(config(), PROMPTS, fakes(diverge={"p2": 3}), NoEnergyMeter(), Session())
    lossless = sections.lossless
    assert lossless.checked and lossless.prompts == 3 and lossless.match_rate == pytest.approx(2 / 3)
    assert [(m.id, m.first_mismatch) for m in lossless.mismatches] == [("p2", 3)]
    assert {r.id: r.first_mismatch for r in sections.per_prompt} == {"p1": None, "p2": 3, "p3": None}


# --- one engine per side: the cost ratio c and the cost model time the job's own speculative engine ------------------


DRAFT = ["speculation=draft_model", "speculation.num_speculative_tokens=3"]


@pytest.mark.parametrize("pairing", ["interleaved", "phased"])
def test_the_cost_model_and_c_reuse_the_jobs_engines(fakes, pairing):
    cfg = config(*DRAFT, "measurement.cost_model=true", f"measurement.pairing={pairing}")
    engines = fakes(forward_s=FORWARD_S.__getitem__)
    sections = runner.run(cfg, PROMPTS, engines, NoEnergyMeter(), Session())
    assert engines.methods() == ["none", "draft_model"] and engines.open == []  # no third or fourth engine
    curve, t = sections.theory.curve, sections.theory
    assert curve is not None and t.curve_note is None and [p.k for p in curve.points] == [1, 2, 3]
    assert curve.verify_s == pytest.approx([FORWARD_S[n] for n in (1, 2, 3, 4)]) and curve.draft_token_s == 0.02
    assert curve.source == cost_model.CURVE_SOURCE.format(timing=FakeEngine.step_timing.format(repeats=7))
    assert t.cost_ratio == pytest.approx(0.02 / 0.11) and t.cost_ratio_source.startswith("measured on the speculative")
    assert t.draft_tpot_s is None and t.target_tpot_s is None  # no decoding was timed for c
    assert sections.timing.cost_model_s is not None and sections.timing.cost_ratio_s is None  # one timing for both


def test_c_without_the_cost_model_times_one_forward_each_once_per_sweep(fakes):
    session, engines = Session(), fakes(forward_s=FORWARD_S.__getitem__)
    first = runner.run(config(*DRAFT), PROMPTS, engines, NoEnergyMeter(), session)
    assert engines.methods() == ["none", "draft_model"] and first.theory.curve is None
    assert first.theory.cost_ratio == pytest.approx(0.02 / 0.11) and first.timing.cost_ratio_s is not None
    assert first.theory.predicted_speedup is not None and first.timing.cost_model_s is None
    timed = []
    engines.forward_s = lambda key: timed.append(key) or FORWARD_S[key]
    second = runner.run(config(*DRAFT), PROMPTS, engines, NoEnergyMeter(), session)  # same key: c is kept
    assert timed == [] and second.theory.cost_ratio == first.theory.cost_ratio and second.timing.cost_ratio_s is None


def test_an_engine_that_cannot_time_its_forwards_gets_c_from_the_draft_alone_after_closing_its_own(fakes):
    cfg = config(*DRAFT, "measurement.cost_model=true")
    draft = draft_reference(cfg)
    # forward_s=None: step_costs raises NotImplementedError, as vLLM's does with a draft model
    engines = fakes(per_token_s=lambda c, p: 0.01 if c.model.target == draft else per_token(c, p))
    seen_open = []
    build = lambda c: seen_open.append(len(engines.open)) or engines(c)  # noqa: E731
    sections = runner.run(cfg, PROMPTS, build, NoEnergyMeter(), Session())
    assert engines.methods() == ["none", "draft_model", "none"] and seen_open == [0, 1, 0]  # built after the closes
    assert (engines.built[-1].model.target, engines.built[-1].model.draft) == (draft, None)
    assert cfg.model.target != draft  # the job's config is left as it is
    t = sections.theory
    assert t.curve is None and t.curve_note == "backend=fake cannot time single target forwards"
    # c = the draft's median TPOT alone / the baseline phase's median TPOT (0.10, 0.05, 0.02 per prompt)
    assert t.cost_ratio == pytest.approx(0.01 / 0.05) and t.cost_ratio_source.startswith("measured: median draft")
    assert (t.draft_tpot_s, t.target_tpot_s) == (pytest.approx(0.01), pytest.approx(0.05))


def test_a_failed_job_closes_every_engine_and_the_meter(fakes):
    class Failing(FakeEngine):
        def generate(self, prompts):
            if self.speculative:
                raise RuntimeError("out of memory")
            return super().generate(prompts)

    engines, meter = fakes(engine=Failing), FakeMeter()
    with pytest.raises(RuntimeError, match="out of memory"):
        runner.run(config(), PROMPTS, engines, meter, Session(), close_meter=app._close_meter)
    assert engines.methods() == ["none", "ngram"] and engines.open == [] and meter.closed


def test_a_meter_that_fails_to_close_keeps_the_measurement_and_says_why(fakes):
    meter = FakeMeter(close_error=OSError("powercap counter vanished\nsecond line"))
    sections = runner.run(config(), PROMPTS, fakes(), meter, Session(), close_meter=app._close_meter)
    assert sections.metrics.tokens_per_s > 0 and sections.energy.joules == 2.0 * 6  # 6 windows of 2 J
    assert sections.energy.meter_error == "OSError: powercap counter vanished"


# --- what differs for a served engine is declared on the engine, not tested as a flag ------------------------------


class Served(FakeEngine):
    """The served engine's hooks: one load run over every prompt per timed call, a `serving` section, no c."""

    no_cost_ratio = "not measured here: a fake server"

    def timed_batches(self, prompts: List[Prompt]) -> List[List[Prompt]]:
        return [prompts]

    def extra_sections(self):
        return ("serving",)

    def acceptance_facts(self):
        return {"acceptance_source": "the fake server's counters", "acceptance_unavailable_reason": None}


def test_a_served_engine_times_one_load_run_adds_its_section_and_refuses_c(fakes):
    meter = FakeMeter()
    sections = runner.run(config("generation.batch_size=1"), PROMPTS, fakes(engine=Served), meter, Session())
    assert meter.events.count(("begin", "speculative")) == 2  # one window per repetition, not per prompt
    assert sections.serving is not None and sections.serving.speculative.requests == 6
    assert sections.serving.acceptance_source == "the fake server's counters"
    assert sections.theory.cost_ratio is None and sections.theory.cost_ratio_source == Served.no_cost_ratio
    offline = runner.run(config("generation.batch_size=1"), PROMPTS, fakes(), FakeMeter(), Session())
    assert offline.serving is None and offline.theory.cost_ratio == 0.0  # ngram: c = 0


# --- the result is built once -------------------------------------------------------------------------------------


def _built_once(cls, made: list):
    """cls, recording every instance and refusing any attribute set after __init__ returned."""

    class BuiltOnce(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            object.__setattr__(self, "_built", True)
            made.append(type(self).__mro__[1].__name__)

        def __setattr__(self, name, value):
            if getattr(self, "_built", False):
                raise AssertionError(f"{cls.__name__}.{name} was set after it was built")
            object.__setattr__(self, name, value)

    return BuiltOnce


def test_run_builds_every_section_once_and_never_changes_it(fakes, monkeypatch):
    from specsweep.energy import section as energy_section

    made: list = []
    for module, name in [
        (summary, "MeasuredSections"),
        (summary, "Timing"),
        (summary, "Metrics"),
        (energy_section, "Energy"),
        (theory, "Theory"),
        (baseline, "BaselineInfo"),
    ]:
        monkeypatch.setattr(module, name, _built_once(getattr(module, name), made))
    cfg = config(*DRAFT, "measurement.cost_model=true")
    meter = FakeMeter(close_error=OSError("gone"))
    sections = runner.run(cfg, PROMPTS, fakes(forward_s=FORWARD_S.__getitem__), meter, Session(), app._close_meter)
    assert sorted(made) == ["BaselineInfo", "Energy", "MeasuredSections", "Metrics", "Theory", "Timing"]
    assert sections.energy.meter_error == "OSError: gone" and sections.theory.curve is not None


# --- the same on a real engine ------------------------------------------------------------------------------------


@pytest.mark.slow  # the tiny model borrows the packaged tokenizer, so it needs the converted 0.5B
def test_a_real_draft_model_job_with_the_cost_model_builds_one_engine_per_side(tiny_model_dir):
    from conftest import build_engine
    from specsweep.config.validate import validate

    tiny = [f"model.target={tiny_model_dir}", f"model.draft={tiny_model_dir}", "model.name=tiny"]
    small = ["dataset.num_prompts=2", "generation.max_new_tokens=8", "measurement.repetitions=1", "energy=none"]
    cfg = compose_config(
        ["backend=pytorch", *DRAFT, *tiny, *small, "backend.dtype=float32", "measurement.cost_model=true"]
    )
    session, built = Session(), []

    def build(run_cfg):
        built.append(str(run_cfg.speculation.method))
        return build_engine(run_cfg, session)

    sections = runner.run(cfg, validate(cfg, session), build, NoEnergyMeter(), session)
    session.close()
    t = sections.theory
    assert built == ["none", "draft_model"] and t.curve is not None and len(t.curve.verify_s) == 4
    assert t.cost_ratio > 0 and t.cost_ratio_source.startswith("measured on the speculative engine's own models")
    assert sections.timing.cost_model_s > 0 and sections.lossless.checked
