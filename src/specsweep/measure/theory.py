"""Theory vs. measurement: Leviathan et al. (2023), "Fast Inference from Transformers via Speculative Decoding".

Model: each drafted token is accepted independently with probability alpha (i.i.d.), a verification step drafts k
tokens, and one draft forward costs c target forwards (c = draft step time / target step time). Then

    expected tokens per target step  E[k]   = (1 - alpha^(k+1)) / (1 - alpha)           (= k + 1 at alpha = 1)
    expected speedup                 S(k,c) = (1 - alpha^(k+1)) / ((1 - alpha) (k c + 1))

Everything here is a pure function of measured numbers: no engine, no I/O, no argument changed (the timing that
gives c and the curve's forward times is in measure/cost_model.py). The measurement and the report both use it.
Predictions are labelled `predicted_*` in result.json; measurements keep their own names.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

from specsweep.results.types import CostCurve, CurvePoint, Metrics, Theory

# Search range for the predicted best k (the config's own limit on num_speculative_tokens).
K_SEARCH_MAX = 64

MODEL_NAME = "Leviathan et al. 2023, i.i.d. acceptance"
ALPHA_ESTIMATOR = (
    "alpha solves sum_{i=1..d} alpha^i = accepted/num_drafts, with d = drafted/num_drafts (mean draft length): "
    "the i.i.d. alpha that reproduces the measured mean acceptance length; accepted/drafted is not alpha"
)


def _check(alpha: float, k: float, c: float = 0.0) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha!r} is invalid: expected a probability in [0, 1]")
    if k < 0:
        raise ValueError(f"k={k!r} is invalid: expected k >= 0")
    if c < 0:
        raise ValueError(f"c={c!r} is invalid: expected a cost ratio >= 0")


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """(1 - alpha^(k+1)) / (1 - alpha), evaluated as 1 + alpha + ... + alpha^k: exact at alpha = 0 (1 token)
    and alpha = 1 (k + 1 tokens), and free of the cancellation the closed form suffers as alpha -> 1."""
    _check(alpha, k)
    return float(sum(alpha**i for i in range(int(k) + 1)))


def expected_speedup(alpha: float, k: int, c: float) -> float:
    """Leviathan's expected walltime improvement: E[tokens per step] / (k c + 1)."""
    _check(alpha, k, c)
    return expected_tokens_per_step(alpha, k) / (k * c + 1.0)


def best_k(alpha: float, c: float, k_max: int = K_SEARCH_MAX) -> Tuple[Optional[int], float, str]:
    """argmax_k S(k, c) over 1..k_max -> (k or None, S at the best k searched, note).

    k is None when S keeps rising: with c = 0 and alpha > 0 every extra draft is free (S climbs to 1/(1-alpha)),
    with alpha = 1 and c < 1 every draft is accepted; or when the optimum lies beyond k_max."""
    _check(alpha, 1, c)
    speedups = [expected_speedup(alpha, k, c) for k in range(1, k_max + 1)]
    best = max(range(len(speedups)), key=lambda i: (speedups[i], -i))  # ties: the smallest k
    k, s = best + 1, speedups[best]
    if c == 0 and alpha > 0:
        return (
            None,
            speedups[-1],
            "no optimum: c=0 makes drafting free, so predicted speedup rises with k towards "
            f"{1 / (1 - alpha) if alpha < 1 else math.inf:.3g}x",
        )
    if alpha == 1 and c < 1:
        return (
            None,
            speedups[-1],
            f"no optimum: alpha=1 accepts every draft, so predicted speedup rises with k towards {1 / c:.3g}x",
        )
    if k == k_max:
        return None, s, f"no optimum in 1..{k_max}: predicted speedup still rises at k={k_max}"
    if s <= 1.0:
        return k, s, f"no k beats plain decoding in this model (best {s:.3g}x at k={k})"
    return k, s, ""


def _draft_gain(alpha: float, d: float) -> float:
    """sum_{i=1..d} alpha^i for real d > 0, = alpha (1 - alpha^d) / (1 - alpha), computed stably."""
    if alpha <= 0.0:
        return 0.0
    if alpha >= 1.0:
        return d
    log_a = math.log(alpha)
    return alpha * math.expm1(d * log_a) / math.expm1(log_a)


def fit_alpha(accepted: int, num_drafts: int, drafted: int) -> Optional[float]:
    """The i.i.d. per-token acceptance probability matching the measured counts (see ALPHA_ESTIMATOR).

    accepted/drafted would not do: tokens after the first rejection are drafted but never get a chance, so
    at alpha = 0.5, k = 5 it reads 0.19. Inverting the mean acceptance length removes that stopping-rule bias.
    None when nothing was drafted."""
    if not num_drafts or not drafted:
        return None
    if accepted < 0 or accepted > drafted or num_drafts > drafted:
        raise ValueError(f"counts accepted={accepted}, num_drafts={num_drafts}, drafted={drafted} are inconsistent")
    gain, d = accepted / num_drafts, drafted / num_drafts
    if accepted == 0:
        return 0.0
    if accepted == drafted:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):  # _draft_gain is increasing in alpha on [0, 1]
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _draft_gain(mid, d) < gain else (lo, mid)
    return (lo + hi) / 2


def section(
    method: str,
    k: Optional[int],
    metrics: Metrics,
    cost: Dict[str, Any],
    curve: Optional[CostCurve] = None,
    curve_note: Optional[str] = None,
) -> Optional[Theory]:
    """result.json's `theory` section for one job: measured alpha and c in, predictions out (None: no speculation).

    `cost` is what measure/cost_model.cost_ratio gives: cost_ratio and cost_ratio_source, with the two TPOTs when
    the draft was timed decoding alone. curve, curve_note: the cost model's curve, or why it is missing."""
    if method == "none":
        return None
    alpha = fit_alpha(metrics.accepted_tokens or 0, metrics.num_drafts or 0, metrics.drafted_tokens or 0)
    c = cost.get("cost_ratio")
    return Theory(
        model=MODEL_NAME,
        k=k,
        alpha=alpha,
        alpha_estimator=ALPHA_ESTIMATOR,
        acceptance_rate=metrics.acceptance_rate,
        mean_draft_length=metrics.drafted_tokens / metrics.num_drafts if metrics.num_drafts else None,
        cost_ratio=c,
        cost_ratio_source=cost.get("cost_ratio_source"),
        draft_tpot_s=cost.get("draft_tpot_s"),
        target_tpot_s=cost.get("target_tpot_s"),
        measured_tokens_per_step=metrics.mean_acceptance_length,
        measured_speedup=metrics.speedup,
        curve=curve,
        curve_note=curve_note,
        **_predictions(alpha, k, c),
    )


def _predictions(alpha: Optional[float], k: Optional[int], c: Optional[float]) -> Dict[str, Any]:
    """The `predicted_*` fields and the note, as far as alpha, k and c allow."""
    if alpha is None or k is None:
        missing = "no draft tokens were counted" if alpha is None else "this method has no fixed k"
        return {"note": f"no prediction: {missing}"}
    tokens = expected_tokens_per_step(alpha, k)
    if c is None:
        return {"predicted_tokens_per_step": tokens, "note": "no speedup prediction: the cost ratio c was not measured"}
    best, best_speedup, note = best_k(alpha, c)
    return {
        "predicted_tokens_per_step": tokens,
        "predicted_speedup": expected_speedup(alpha, k, c),
        "predicted_best_k": best,
        "predicted_best_speedup": best_speedup,
        "note": note,
    }


# --- the measured-acceptance cost model: speedup vs k from one run at a large k (the probe) -------------------------
#
# With p_i the share of draft steps whose i-th token was accepted (metrics.acceptance_per_position), a draft step at
# any k <= probe_k yields E(k) = 1 + p_1 + ... + p_k tokens in expectation, without assuming independent acceptance:
# a greedy draft model's first k proposals do not depend on k, and neither does prompt lookup's. A step costs
# k t_draft + t_verify(k+1), where t_verify(n) is one target forward over n new tokens, timed, since verification
# is not free on a CPU (it grows with n) and nearly flat on a GPU until compute-bound; plain decoding costs
# t_verify(1) per token. Prompt lookup finds no draft on some steps: those yield 1 token at t_verify(1).


def nondecreasing(values: List[float]) -> List[float]:
    """The closest non-decreasing sequence in least squares (pool adjacent violators). A forward over more new
    tokens never costs less, so a dip in timed medians is noise; pooling it with its neighbours keeps the curve
    from preferring a k only because its verification happened to be timed during a quiet moment."""
    blocks: List[List[float]] = []  # [mean, count]
    for value in values:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, c1), (m2, c2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    return [mean for mean, count in blocks for _ in range(int(count))]


def draft_step_share(output_tokens: int, num_drafts: int, accepted: int) -> float:
    """The share of verification steps that carried a draft: a draft step yields 1 + accepted tokens, a step
    without one yields 1, so output_tokens - num_drafts - accepted steps had none."""
    without = max(output_tokens - num_drafts - accepted, 0)
    steps = num_drafts + without
    return num_drafts / steps if steps else 0.0


def curve_tokens_per_step(per_position: List[float], k: int, share: float) -> float:
    return share * (1.0 + sum(per_position[:k])) + (1.0 - share)


REPLAY_DRAWS = 16


def agreement_trace(steps: List[Tuple[int, int]]) -> Tuple[List[Optional[bool]], float]:
    """What the probe's steps reveal, position by position: whether the draft's proposal there matched the target's
    token (True/False), or None where the probe never asked (the bonus token after a fully accepted draft). With the
    share of known agreements that are followed by another agreement (how unknowns are filled when replaying).

    For a greedy draft model the proposal at a position depends only on the verified prefix, so this trace is a
    property of the text, whatever k drafted it: replaying it at a smaller k gives that k's steps. The mean
    1 + p_1 + ... + p_k does not, when acceptance is bursty: at a smaller k more steps start inside an accepted run."""
    trace: List[Optional[bool]] = []
    for drafted, accepted in steps:
        trace += [True] * accepted + [False if accepted < drafted else None]
    pairs = [(a, b) for a, b in zip(trace, trace[1:]) if a is True and b is not None]
    return trace, (sum(b for _, b in pairs) / len(pairs)) if pairs else 0.5


def replay_tokens_per_step(trace: List[Optional[bool]], k: int, keep: float, draws: int = REPLAY_DRAWS) -> float:
    """Mean tokens per draft step when drafting k at a time over the probe's trace (unknowns drawn as agreements
    with probability `keep`, averaged over a fixed set of draws, so the result is reproducible)."""
    import random

    rng = random.Random(0)
    tokens = steps = 0
    for _ in range(draws):
        filled = [rng.random() < keep if known is None else known for known in trace]
        pos = 0
        while pos < len(filled) - k:
            accepted = 0
            while accepted < k and filled[pos + accepted]:
                accepted += 1
            tokens, steps, pos = tokens + accepted + 1, steps + 1, pos + accepted + 1
    return tokens / steps if steps else 1.0


def step_seconds(k: int, verify_s: List[float], draft_token_s: float, share: float) -> float:
    """Forward time of a mean step at k (verify_s[n-1] = t_verify(n); a share 1 - share of the steps had no draft:
    1 token in t_verify(1))."""
    return share * (k * draft_token_s + verify_s[k]) + (1.0 - share) * verify_s[0]


def curve_speedup(draft_step_tokens: float, k: int, verify_s: List[float], draft_token_s: float, share: float):
    """Per-step predicted speedup at k: tokens per step x t_verify(1) / forward seconds per step."""
    return (share * draft_step_tokens + 1.0 - share) * verify_s[0] / step_seconds(k, verify_s, draft_token_s, share)


def generation_speedup(
    at_k: Tuple[float, float], at_probe: Tuple[float, float], verify_1: float, timeline, measured: Optional[float]
) -> float:
    """The whole-generation speedup that tokens/s measures, where the per-step one leaves out two things: the
    prefills (of the target, and of the draft where there is one), which do not shrink with k, and the engine's own
    work per target step, o = baseline TPOT - t_verify(1).

    at_k, at_probe: (tokens per step, forward seconds per step) at k and at the probe's k. timeline: medians of
    the probe's generations and its baseline's: tokens (per generation), baseline_ttft_s, baseline_tpot_s, ttft_s,
    tpot_s. A generation of n tokens takes n / tokens_per_step steps of (seconds + o) plus what does not depend on
    k; that part is what the probe's time leaves after its own steps. (Not the probe's TTFT: where an engine emits
    the first step's tokens together, as transformers does, its TTFT holds a whole step at the probe's k, which a
    smaller k would not pay.) measured: the probe's measured speedup; the curve then passes through it, the model
    giving only the ratio between k and the probe's k (medians of a few generations and the ratio of their total
    tokens/s, what the speedup is, can differ by more than the differences between neighbouring k)."""
    n, tpot = timeline["tokens"], timeline["baseline_tpot_s"]
    overhead = max(tpot - verify_1, 0.0)

    def steps_s(cost: Tuple[float, float]) -> float:
        tokens_per_step, seconds = cost
        return n / tokens_per_step * (seconds + overhead)

    probe = timeline["ttft_s"] + (n - 1) * timeline["tpot_s"]
    fixed = max(probe - steps_s(at_probe), 0.0)  # below 0 only where the timed steps overstate the probe's own
    at_k_s = fixed + steps_s(at_k)
    if measured:
        return measured * (fixed + steps_s(at_probe)) / at_k_s
    return (timeline["baseline_ttft_s"] + (n - 1) * tpot) / at_k_s


def _point_predictor(metrics: Metrics, verify_s, draft_s: float, share: float, alpha, energy, timeline, at_probe):
    """(k, tokens per draft step, (tokens, seconds) per step at k) -> that k's CurvePoint (see cost_curve)."""
    c = draft_s / verify_s[0]

    def point(k: int, draft_step_tokens: float, at_k: Tuple[float, float]) -> CurvePoint:
        speedup = curve_speedup(draft_step_tokens, k, verify_s, draft_s, share)
        if timeline:
            speedup = generation_speedup(at_k, at_probe, verify_s[0], timeline, metrics.speedup)
        joules = None
        if energy is not None and metrics.speedup:
            base_jpt, ratio = energy
            joules = base_jpt * ratio * metrics.speedup / speedup
        return CurvePoint(
            k=k,
            tokens_per_step=at_k[0],
            speedup=speedup,
            iid_speedup=expected_speedup(alpha, k, c) if alpha is not None else None,
            joules_per_token=joules,
        )

    return point


def cost_curve(
    metrics: Metrics,
    probe_k: int,
    costs: Dict[str, Any],
    alpha: Optional[float],
    energy,
    steps=None,
    timeline: Optional[Dict[str, float]] = None,
) -> CostCurve:
    """The predicted curve for k = 1..probe_k from this job's counts and timed costs (see the comment above).

    energy: (baseline J/token, measured J/token ratio) or None; J/token(k) then assumes the power drawn at k is the
    power measured at the probe: J/token(k) = baseline J/token x energy_ratio x S_measured(probe) / S(k)."""
    per_position = list(metrics.acceptance_per_position or [])
    verify_s, draft_s = costs["verify_s"], costs["draft_token_s"]
    share = draft_step_share(metrics.output_tokens or 0, metrics.num_drafts or 0, metrics.accepted_tokens or 0)
    trace, keep = agreement_trace(steps) if steps else (None, 0.0)
    draft_step_tokens = {
        k: replay_tokens_per_step(trace, k, keep) if trace else curve_tokens_per_step(per_position, k, 1.0)
        for k in range(1, probe_k + 1)
    }
    step = {
        k: (share * t + 1.0 - share, step_seconds(k, verify_s, draft_s, share)) for k, t in draft_step_tokens.items()
    }
    predict = _point_predictor(metrics, verify_s, draft_s, share, alpha, energy, timeline, step[probe_k])
    points = [predict(k, draft_step_tokens[k], step[k]) for k in range(1, probe_k + 1)]
    best = max(points, key=lambda p: (p.speedup, -p.k))
    with_energy = [p for p in points if p.joules_per_token is not None]
    return CostCurve(
        probe_k=probe_k,
        verify_s=verify_s,
        draft_token_s=draft_s,
        draft_step_share=share,
        points=points,
        best_k=best.k,
        best_speedup=best.speedup,
        best_energy_k=min(with_energy, key=lambda p: (p.joules_per_token, p.k)).k if with_energy else None,
        source=costs["source"],
        tokens_source=(
            f"the probe's {len(steps)} recorded draft steps replayed at each k" if trace else "1 + p_1 + ... + p_k"
        ),
        timeline=timeline,
    )


LOAD_CURVE_MODEL = (
    "two-point load model: the probe's measured per-position acceptance gives tokens per step E(k) = 1 + sum_{i<=k} "
    "a_i; the step time grows linearly in k from the baseline's (k=0) to the probe's (E(k_p) / S_p at k_p), both "
    "measured at this load, so S(k) = E(k) / (1 + (k / k_p) (E(k_p) / S_p - 1)); an estimate"
)


def load_curve(per_position: List[float], probe_k: int, probe_speedup: float) -> List[Dict[str, float]]:
    """Predicted speedup at every k in 1..probe_k for a served job at one load level, from its probe's measured
    per-position (unconditional) acceptance and measured speedup (LOAD_CURVE_MODEL): the load's own cost, whatever
    batching does to it, enters only through the two measured points; it passes through the probe's."""
    if probe_k < 1 or len(per_position) < probe_k or not probe_speedup > 0:
        raise ValueError(f"a probe needs k >= 1, {probe_k} acceptance positions and a speedup > 0")
    step_growth = ((1.0 + sum(per_position[:probe_k])) / probe_speedup - 1.0) / probe_k  # per drafted token
    return [{"k": k, "speedup": (1.0 + sum(per_position[:k])) / (1.0 + k * step_growth)} for k in range(1, probe_k + 1)]
