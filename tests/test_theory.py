"""Leviathan et al.'s speculative-decoding model: closed forms, limits, the alpha estimator, the result section."""

import copy
import math
import random

import pytest

from fakes import FakeEngines
from specsweep.core import Prompt
from specsweep.measure import cost_model, theory
from specsweep.results.types import Metrics
from specsweep.session import Session


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.8, 0.95, 0.999])
@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_tokens_per_step_matches_closed_form(alpha, k):
    assert theory.expected_tokens_per_step(alpha, k) == pytest.approx((1 - alpha ** (k + 1)) / (1 - alpha), rel=1e-12)


def test_limits():
    assert theory.expected_tokens_per_step(0.0, 5) == 1.0  # nothing accepted: the target's own token
    assert theory.expected_tokens_per_step(1.0, 5) == 6.0  # alpha -> 1: k drafts + the bonus token
    assert theory.expected_tokens_per_step(1 - 1e-12, 5) == pytest.approx(6.0, rel=1e-9)  # continuous at 1
    assert theory.expected_tokens_per_step(0.7, 0) == 1.0  # k = 0 is plain decoding
    assert theory.expected_speedup(0.0, 4, 0.5) == pytest.approx(1 / 3)  # drafting only costs
    assert theory.expected_speedup(1.0, 4, 0.0) == 5.0
    # alpha=0.8, k=5, c=0.05 by hand: (1 - 0.8^6) / (0.2 * 1.25) = 2.95
    assert theory.expected_speedup(0.8, 5, 0.05) == pytest.approx((1 - 0.8**6) / (0.2 * 1.25))


def test_rejects_out_of_range_inputs():
    for args in [(-0.1, 3, 0.1), (1.1, 3, 0.1), (0.5, -1, 0.1), (0.5, 3, -0.2)]:
        with pytest.raises(ValueError):
            theory.expected_speedup(*args)


def test_best_k_is_the_argmax_and_handles_unbounded_cases():
    k, s, note = theory.best_k(0.8, 0.05)
    grid = {j: theory.expected_speedup(0.8, j, 0.05) for j in range(1, 65)}
    assert k == max(grid, key=grid.get) and s == grid[k] and note == ""
    assert 1 < k < 64
    # a costlier draft pushes the optimum down
    assert theory.best_k(0.8, 0.3)[0] < k
    # c = 0 (ngram): every extra token is free, speedup rises towards 1/(1-alpha): no finite optimum
    k0, s0, note0 = theory.best_k(0.6, 0.0)
    assert k0 is None and "c=0" in note0 and s0 == pytest.approx(1 / 0.4, rel=1e-6)
    # alpha = 1 with c < 1: (k+1)/(kc+1) rises with k
    assert theory.best_k(1.0, 0.2)[0] is None
    # alpha = 0: speculation only costs; the best is the least drafting, and the note says it does not pay
    k1, s1, note1 = theory.best_k(0.0, 0.3)
    assert k1 == 1 and s1 < 1 and "no k beats plain decoding" in note1


def _simulate(alpha, k, steps, rng):
    """Counts as the engines report them, drawn from the i.i.d. model itself."""
    accepted = 0
    for _ in range(steps):
        a = 0
        while a < k and rng.random() < alpha:
            a += 1
        accepted += a
    return accepted, steps, steps * k


@pytest.mark.parametrize("alpha,k", [(0.3, 3), (0.7, 5), (0.9, 8)])
def test_fit_alpha_recovers_alpha_where_acceptance_rate_does_not(alpha, k):
    accepted, steps, drafted = _simulate(alpha, k, 20000, random.Random(0))
    fitted = theory.fit_alpha(accepted, steps, drafted)
    assert fitted == pytest.approx(alpha, abs=0.015)
    assert abs(accepted / drafted - alpha) > 0.05  # the naive accepted/drafted is biased by the stopping rule


def test_fit_alpha_edges():
    assert theory.fit_alpha(0, 10, 50) == 0.0
    assert theory.fit_alpha(26, 6, 26) == 1.0  # every drafted token accepted, even with short final drafts
    assert theory.fit_alpha(0, 0, 0) is None
    with pytest.raises(ValueError):
        theory.fit_alpha(60, 10, 50)
    # the fit reproduces the mean acceptance length it came from
    alpha = theory.fit_alpha(23, 10, 50)
    assert 1 + sum(alpha**i for i in range(1, 6)) == pytest.approx(1 + 23 / 10, rel=1e-9)


def test_section_labels_predictions_and_uses_measured_inputs():
    metrics = Metrics(
        accepted_tokens=23,
        num_drafts=10,
        drafted_tokens=50,
        acceptance_rate=0.46,
        mean_acceptance_length=3.3,
        speedup=1.4,
    )
    cost = {"cost_ratio": 0.2, "cost_ratio_source": "measured"}
    sec = theory.section("draft_model", 5, metrics, cost)
    alpha = theory.fit_alpha(23, 10, 50)
    assert sec.alpha == alpha and sec.cost_ratio == 0.2
    assert sec.measured_speedup == 1.4 and sec.measured_tokens_per_step == 3.3
    assert sec.predicted_speedup == pytest.approx(theory.expected_speedup(alpha, 5, 0.2))
    assert sec.predicted_best_k == theory.best_k(alpha, 0.2)[0]
    assert theory.section("none", None, metrics, {}) is None
    no_c = theory.section("draft_model", 5, metrics, {"cost_ratio": None, "cost_ratio_source": "failed"})
    assert no_c.predicted_speedup is None and "cost ratio" in no_c.note
    assert math.isclose(no_c.predicted_tokens_per_step, theory.expected_tokens_per_step(alpha, 5))


def test_the_draft_timed_alone_gives_c_and_leaves_the_jobs_config_as_it_is():
    """Where the speculative engine cannot time its forwards, c is the draft decoding alone over the baseline's TPOT
    (measure/cost_model.py: the engine I/O that theory.py no longer does)."""
    from specsweep.backends.pytorch.config import PytorchBackendConfig
    from specsweep.config.schema import ExperimentConfig, ModelConfig, SpeculationConfig

    cfg = ExperimentConfig(
        backend=PytorchBackendConfig(),
        model=ModelConfig(name="m", target="T", draft="D"),
        speculation=SpeculationConfig(method="draft_model", num_speculative_tokens=3),
    )
    prompts = [Prompt("a", "code", "x"), Prompt("b", "chat", "y")]
    engines = FakeEngines(tokens=11, per_token_s=0.02)  # the draft decodes at 0.02 s per token

    out = cost_model.draft_alone(cfg, prompts, engines, target_tpot_s=0.08)
    assert [(c.model.target, c.model.draft, str(c.speculation.method)) for c in engines.built] == [("D", None, "none")]
    assert engines.open == [] and (cfg.model.target, cfg.model.draft) == ("T", "D")  # closed; cfg left as it was
    assert out["cost_ratio"] == pytest.approx(0.25) and out["draft_tpot_s"] == pytest.approx(0.02)
    assert cost_model.draft_alone(cfg, prompts, engines, None)["cost_ratio"] is None

    def broken(c):
        raise RuntimeError("no memory")

    failed = cost_model.draft_alone(cfg, prompts, broken, 0.08)
    assert failed["cost_ratio"] is None and "no memory" in failed["cost_ratio_source"]
    ngram = copy.deepcopy(cfg)
    ngram.speculation = SpeculationConfig(method="ngram", num_speculative_tokens=3)
    cost, _ = cost_model.cost_ratio(ngram, prompts, broken, None, cost_model.TimedSteps(), None, Session())
    assert cost == {"cost_ratio": 0.0, "cost_ratio_source": cost_model.NGRAM_COST}  # nothing built: c = 0


def test_theory_is_pure_it_builds_no_engine_and_changes_no_argument():
    import inspect

    source = inspect.getsource(theory)
    assert (
        "build_engine" not in source and "measure_cost_ratio" not in source and "import specsweep.measure" not in source
    )
    metrics = Metrics(accepted_tokens=23, num_drafts=10, drafted_tokens=50, acceptance_rate=0.46, speedup=1.4)
    before, cost = copy.deepcopy(metrics), {"cost_ratio": 0.2, "cost_ratio_source": "measured"}
    theory.section("draft_model", 5, metrics, cost)
    assert metrics == before and cost == {"cost_ratio": 0.2, "cost_ratio_source": "measured"}


# --- the measured-acceptance cost model (theory.cost_curve) ------------------------------------------------------


def _agreement(n: int, seed: int) -> list:
    """Whether a greedy draft's next token equals the target's at each position: bursty (a two-state Markov chain,
    long agreeing runs inside boilerplate, short ones elsewhere), so acceptance is far from independent."""
    import random

    rng = random.Random(seed)
    out, agreeing = [], True
    for _ in range(n):
        agreeing = rng.random() < (0.93 if agreeing else 0.35)
        out.append(agreeing)
    return out


def test_steps_without_a_draft_count_as_plain_decoding_steps():
    # prompt lookup: 10 draft steps (each 2 drafted, 1 accepted) and 5 steps that found no match -> 25 tokens
    assert theory.draft_step_share(output_tokens=25, num_drafts=10, accepted=10) == pytest.approx(10 / 15)
    verify = [1.0, 1.5, 2.0]
    # per step: 2/3 x (2 tokens in t_verify(3) = 2 s) + 1/3 x (1 token in 1 s) -> 5/3 tokens in 5/3 s
    assert theory.curve_speedup(2.0, 2, verify, 0.0, 10 / 15) == pytest.approx(1.0)


PREFILL_T, PREFILL_D, T_DRAFT, OVERHEAD = 1.5, 0.5, 0.03, 0.04


def _verify(m: int) -> float:
    return 0.10 + 0.012 * m  # CPU-like: verification grows with its width


def _simulated_generation(agree: list, k: int, n: int):
    """An engine played out event by event (nothing of the model's formulas): the target's and the draft's prefill,
    then steps of k draft forwards and one verification of k+1 tokens plus the engine's own work; a step emits its
    accepted drafts and one more token, all at its end, cut at n tokens -> (Generation, its AcceptanceCounts)."""
    from specsweep.core import AcceptanceCounts, Generation

    counts, clock, out, first = AcceptanceCounts(), PREFILL_T + (PREFILL_D if k else 0.0), 0, None
    while out < n:
        if k == 0:  # plain decoding: one target forward per token
            clock += _verify(1) + OVERHEAD
            out += 1
        else:
            accepted = 0
            while accepted < k and agree[out + accepted]:
                accepted += 1
            counts.record_step(k, accepted)
            clock += k * T_DRAFT + _verify(k + 1) + OVERHEAD
            out = min(out + accepted + 1, n)
        first = first if first is not None else clock
    return Generation("p", 10, [0] * n, clock, first, counts if k else None), counts


def _simulated_job(k: int, prompts: int = 40, n: int = 32):
    gens = [_simulated_generation(_agreement(n + 20, seed=s), k, n) for s in range(prompts)]
    return [g for g, _ in gens], sum((c for _, c in gens[1:]), gens[0][1])


def test_the_whole_generation_curve_matches_an_engine_simulated_event_by_event():
    """The truth is an engine played out token by token (end-of-generation cuts, bursty acceptance, first-step
    tokens arriving together); the curve sees only what a job records: the probe's generations, counts and timed
    forwards, and its baseline's generations. Short generations with long prefills, where the per-step speedup is
    not what tokens/s measures: the whole-generation curve must predict every k within 6% (what is left is the last
    step's cut, which the model averages over), the per-step one misses by over 10%."""
    from statistics import median

    from specsweep.measure import metrics as metric_fns
    from specsweep.results.types import Metrics

    base, _ = _simulated_job(0)
    base_rate = sum(len(g.output_ids) for g in base) / sum(g.wall_s for g in base)
    measured = {}
    for k in range(1, 9):
        gens, _ = _simulated_job(k)
        measured[k] = sum(len(g.output_ids) for g in gens) / sum(g.wall_s for g in gens) / base_rate
    probe, counts = _simulated_job(8)
    timeline = {
        "tokens": median(len(g.output_ids) for g in probe),
        "baseline_ttft_s": median(g.ttft_s for g in base),
        "baseline_tpot_s": median(metric_fns.tpot_s(g) for g in base),
        "ttft_s": median(g.ttft_s for g in probe),
        "tpot_s": median(metric_fns.tpot_s(g) for g in probe),
    }
    acc = metric_fns.acceptance_metrics(counts)
    m = Metrics(
        output_tokens=sum(len(g.output_ids) for g in probe),
        speedup=measured[8],
        accepted_tokens=counts.accepted,
        num_drafts=counts.num_drafts,
        drafted_tokens=counts.drafted,
        acceptance_per_position=acc["acceptance_per_position"],
    )
    costs = {"verify_s": [_verify(n) for n in range(1, 10)], "draft_token_s": T_DRAFT, "source": "simulated"}
    curve = theory.cost_curve(m, 8, costs, None, None, steps=counts.steps, timeline=timeline)
    errors = {p.k: p.speedup / measured[p.k] - 1 for p in curve.points}
    assert max(map(abs, errors.values())) < 0.06, errors
    per_step = theory.cost_curve(m, 8, costs, None, None, steps=counts.steps)  # no timeline: prefills left out
    assert max(abs(p.speedup / measured[p.k] - 1) for p in per_step.points) > 0.10
    assert curve.points[-1].speedup == pytest.approx(measured[8])  # anchored on the probe's measured speedup
    assert measured[curve.best_k] >= 0.97 * max(measured.values()), (curve.best_k, measured)


def test_timed_verify_costs_are_made_nondecreasing_by_pooling_only_the_dips():
    # a forward over more new tokens never costs less: a dip is noise, pooled with its neighbours (least squares)
    assert theory.nondecreasing([1.0, 3.0, 2.0, 4.0]) == pytest.approx([1.0, 2.5, 2.5, 4.0])
    # the noisy series seen under contention (t_verify(1) 0.75 s, t_verify(3) 0.22 s): one level, their mean
    assert theory.nondecreasing([0.75, 0.30, 0.22, 0.40]) == pytest.approx([0.4175] * 4)
    rising = [0.2, 0.21, 0.25, 0.31]
    assert theory.nondecreasing(rising) == rising  # nothing to pool: the timings stand as measured
    flat_then_dip = [0.5, 0.5, 0.5, 0.1]
    assert theory.nondecreasing(flat_then_dip) == pytest.approx([0.4] * 4)


def test_the_load_curve_recovers_a_planted_linear_cost_engine_and_passes_through_its_probe():
    """A served engine at one load whose step costs 1 + 0.3 k baseline steps and whose position i is accepted with
    these rates: its speedup at every k is E(k) / (1 + 0.3 k); the probe at k=6 alone must give them all back."""
    rates = [0.9, 0.7, 0.5, 0.4, 0.2, 0.1]

    def planted(k):
        return (1 + sum(rates[:k])) / (1 + 0.3 * k)

    curve = theory.load_curve(rates, 6, planted(6))
    assert [p["k"] for p in curve] == [1, 2, 3, 4, 5, 6]
    for point in curve:
        assert point["speedup"] == pytest.approx(planted(point["k"]), rel=1e-12)
    best = max(curve, key=lambda p: p["speedup"])["k"]
    assert best == max(range(1, 7), key=planted) == 3
    with pytest.raises(ValueError):
        theory.load_curve(rates[:3], 6, 1.0)
