"""Leviathan et al.'s speculative-decoding model: closed forms, limits, the alpha estimator, the result section."""

import math
import random

import pytest

from specsweep.measure import theory
from specsweep.results.types import Metrics


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


class _FakeEngine:
    def __init__(self, tpot):
        self.tpot, self.closed = tpot, False

    def generate(self, prompts):
        from specsweep.backends.base import Generation

        return [Generation(p, 3, [1] * 11, wall_s=0.1 + 10 * self.tpot, ttft_s=0.1, acceptance=None) for p in prompts]

    def close(self):
        self.closed = True


def test_measure_cost_ratio_times_the_draft_as_target(tmp_path):
    from specsweep.backends.pytorch.config import PytorchBackendConfig
    from specsweep.config.schema import ExperimentConfig, ModelConfig, SpeculationConfig

    cfg = ExperimentConfig(
        backend=PytorchBackendConfig(),
        model=ModelConfig(name="m", target="T", draft="D"),
        speculation=SpeculationConfig(method="draft_model", num_speculative_tokens=3),
    )
    built = []

    def build(c):
        built.append((c.model.target, c.speculation.method))
        return _FakeEngine(0.02)

    import copy

    no_spec = copy.deepcopy(cfg)
    no_spec.speculation = SpeculationConfig()
    out = theory.measure_cost_ratio(cfg, ["a", "b"], build, no_spec, target_tpot_s=0.08)
    assert built == [("D", "none")]
    assert out["cost_ratio"] == pytest.approx(0.25) and out["draft_tpot_s"] == pytest.approx(0.02)
    assert theory.measure_cost_ratio(cfg, ["a"], build, copy.deepcopy(no_spec), None)["cost_ratio"] is None

    def broken(c):
        raise RuntimeError("no memory")

    failed = theory.measure_cost_ratio(cfg, ["a"], broken, copy.deepcopy(no_spec), 0.08)
    assert failed["cost_ratio"] is None and "no memory" in failed["cost_ratio_source"]
    ngram = copy.deepcopy(cfg)
    ngram.speculation = SpeculationConfig(method="ngram", num_speculative_tokens=3)
    assert theory.measure_cost_ratio(ngram, ["a"], broken, no_spec, 0.08)["cost_ratio"] == 0.0
