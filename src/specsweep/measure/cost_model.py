"""The cost model's engine I/O: the draft/target cost ratio c of the theory section, and the timed forwards of the
speedup-vs-k curve (measurement.cost_model=true). Both come from the job's own speculative engine while it is still
open (`Backend.step_costs`): a job builds no engine for them. Only where that engine cannot time its forwards (vLLM
with a draft model, TensorRT-LLM) is c measured the older way, the draft decoding alone as its own engine, after the
job's engines are closed. The maths (the curve, `nondecreasing`) is in theory.py, which does no I/O.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

from specsweep.core import ratio
from specsweep.measure import metrics, theory
from specsweep.measure.baseline import baseline_config, baseline_key
from specsweep.measure.phases import Phase
from specsweep.methods import method_spec
from specsweep.models.resolve import draft_reference
from specsweep.results.types import Energy, Metrics

REPEATS = 7  # timed rounds of forwards, after one warm-up round (Backend.step_costs)
# Session slot: c by (baseline key, method, draft), so a sweep measures it once.
COST_RATIOS = "measure.cost_ratios"

# The curve's `source`: how the engine timed its forwards (Backend.step_timing), then what this module did to them.
CURVE_SOURCE = "{timing}, made non-decreasing in n; p_i, draft_step_share: this job's counts"
FORWARD_COST = (
    "measured on the speculative engine's own models: t_draft / t_verify(1) = {draft:.4g} s / {verify:.4g} s, one "
    "forward of the draft and of the target over 1 new token ({timing})"
)
NGRAM_COST = "c=0: the ngram proposer is a table lookup in the context (no model forward); not timed"


@dataclass(frozen=True)
class TimedSteps:
    """The speculative engine's timed forwards (`Backend.step_costs`, raw medians), or why there are none."""

    raw: Optional[Dict[str, Any]] = None
    unsupported: Optional[str] = None  # the engine cannot time its forwards (its NotImplementedError)
    failed: Optional[str] = None  # timing them for c failed
    seconds: Optional[float] = None
    for_curve: bool = False  # timed at n = 1..k+1 for the curve (else at n = 1, for c alone)


def _cost_ratio_slot(session):
    return session.slot(COST_RATIOS, capacity=1)


def _cost_ratio_key(cfg) -> Tuple[str, str, Optional[str]]:
    return baseline_key(cfg), str(cfg.speculation.method), draft_reference(cfg)


def _forwards_for_c(cfg, engine, session) -> bool:
    """c is timed on the engine's forwards: a drafting model to time, c not measured yet, the engine not refusing."""
    timed = method_spec(cfg.speculation.method).cost == "timed"
    return timed and engine.no_cost_ratio is None and _cost_ratio_key(cfg) not in _cost_ratio_slot(session)


def _n_max(cfg, engine, phase: Phase, session) -> Tuple[Optional[int], bool]:
    """How many new tokens to time the target over (None: nothing to time), and whether it is for the curve."""
    if cfg.speculation.method == "none":
        return None, False
    k, counts = cfg.speculation.num_speculative_tokens, phase.acceptance()
    if cfg.measurement.cost_model and k is not None and counts is not None and counts.num_drafts:
        return k + 1, True
    return (1, False) if _forwards_for_c(cfg, engine, session) else (None, False)


def time_steps(cfg, engine, prompt, phase: Phase, session) -> TimedSteps:
    """Time the speculative engine's forwards on `prompt`, once, for the curve and for c (see module doc)."""
    n_max, for_curve = _n_max(cfg, engine, phase, session)
    if n_max is None:
        return TimedSteps()
    start = time.perf_counter()
    try:
        raw = engine.step_costs(prompt, n_max, REPEATS)
    except NotImplementedError as err:
        return TimedSteps(unsupported=str(err), for_curve=for_curve)
    except Exception as err:
        if for_curve:  # the curve was asked for: a failure to time it fails the job, as any measurement would
            raise
        # c is a by-product: timing the draft must never fail the run
        return TimedSteps(failed=f"draft timing failed: {type(err).__name__}: {err}")
    return TimedSteps(raw=raw, seconds=time.perf_counter() - start, for_curve=for_curve)


def cost_ratio(cfg, prompts, build_engine, refusal: Optional[str], steps: TimedSteps, base: Optional[Phase], session):
    """c for the theory section, measured once per (baseline key, method, draft) -> (what theory.section takes:
    cost_ratio, cost_ratio_source and, when the draft was timed decoding alone, the two TPOTs; the seconds spent on
    c alone, None when cached or timed with the curve). refusal: the engine's `no_cost_ratio`."""
    if cfg.speculation.method == "none":
        return {}, None
    if refusal is not None:
        return {"cost_ratio": None, "cost_ratio_source": refusal}, None
    spent: List[Optional[float]] = []

    def measure() -> Dict[str, Any]:
        start = time.perf_counter()
        cost, from_forwards = _measure(cfg, prompts, build_engine, steps, base)
        seconds = time.perf_counter() - start
        if from_forwards:  # timed with the curve: its time is the cost model's; else timed for c alone
            seconds = None if steps.for_curve else seconds + (steps.seconds or 0.0)
        spent.append(seconds)
        return cost

    cost = _cost_ratio_slot(session).get_or_create(_cost_ratio_key(cfg), measure)
    return cost, (spent[0] if spent else None)


def _measure(cfg, prompts, build_engine, steps: TimedSteps, base: Optional[Phase]) -> Tuple[Dict[str, Any], bool]:
    """-> (c with its source, whether it came from the engine's timed forwards)."""
    spec = method_spec(cfg.speculation.method)
    if spec.cost == "free":
        return {"cost_ratio": 0.0, "cost_ratio_source": NGRAM_COST}, False
    if spec.cost != "timed":
        return {"cost_ratio": None, "cost_ratio_source": f"not measured for method={spec.name}"}, False
    raw = steps.raw
    if raw is not None and raw.get("draft_token_s") is not None:
        draft, verify = raw["draft_token_s"], raw["verify_s"][0]
        source = FORWARD_COST.format(draft=draft, verify=verify, timing=raw["timing"])
        return {"cost_ratio": ratio(draft, verify), "cost_ratio_source": source}, True
    if steps.failed is not None:
        return {"cost_ratio": None, "cost_ratio_source": steps.failed}, False
    # The engine cannot time one forward of its draft (vLLM runs a draft model's forwards inside every target
    # request; TensorRT-LLM has no forward to time): only a second engine, the draft alone, gives c there.
    return draft_alone(cfg, prompts, build_engine, _target_tpot(base)), False


def _target_tpot(base: Optional[Phase]) -> Optional[float]:
    if base is None:
        return None
    tpots = [t for g in base.all() if (t := metrics.tpot_s(g)) is not None]
    return median(tpots or [0.0])


def draft_alone(cfg, prompts: List, build_engine, target_tpot_s: Optional[float]) -> Dict[str, Any]:
    """c from the draft LM decoding alone (built as the target with no speculation, same backend, dtype and
    generation settings; one warm-up then up to 3 prompts): TPOT draft / TPOT target, where the target's TPOT comes
    from this job's baseline phase. Never raises: a failure leaves c unmeasured, with why."""
    if not target_tpot_s:
        return {
            "cost_ratio": None,
            "cost_ratio_source": "no target TPOT to divide by (no baseline phase, or its outputs were under 2 tokens)",
        }
    draft_cfg = baseline_config(cfg)  # a copy: the job's config is left as it is
    draft_cfg.model.target, draft_cfg.model.draft = draft_reference(cfg), None
    try:
        engine = build_engine(draft_cfg)
        try:
            engine.generate(prompts[:1])
            tpots = [t for g in engine.generate(prompts[:3]) if (t := metrics.tpot_s(g)) is not None]
        finally:
            engine.close()
    except Exception as err:  # the theory is a by-product: timing the draft must never fail the run
        return {"cost_ratio": None, "cost_ratio_source": f"draft timing failed: {type(err).__name__}: {err}"}
    if not tpots:
        return {"cost_ratio": None, "cost_ratio_source": "draft timing produced fewer than 2 tokens per prompt"}
    draft_tpot = median(tpots)
    return {
        "cost_ratio": draft_tpot / target_tpot_s,
        "cost_ratio_source": f"measured: median draft TPOT over {len(tpots)} prompt(s) / "
        "median target TPOT of the baseline phase",
        "draft_tpot_s": draft_tpot,
        "target_tpot_s": target_tpot_s,
    }


def _timeline(phase: Phase, base: Optional[Phase]) -> Optional[Dict[str, float]]:
    """Medians of the probe's generations and of its baseline's: what the curve needs besides the steps."""
    if base is None or not phase.all():
        return None
    values = {
        "tokens": median([len(g.output_ids) for g in phase.all()]),
        "baseline_ttft_s": metrics.median_known([g.ttft_s for g in base.all()]),
        "baseline_tpot_s": metrics.median_known([metrics.tpot_s(g) for g in base.all()]),
        "ttft_s": metrics.median_known([g.ttft_s for g in phase.all()]),
        "tpot_s": metrics.median_known([metrics.tpot_s(g) for g in phase.all()]),
    }
    return values if all(v == v for v in values.values()) else None  # NaN: a median had nothing to take


def step_costs(raw: Dict[str, Any]) -> Dict[str, Any]:
    """What theory.cost_curve takes from an engine's raw step costs: verify_s made non-decreasing in n (a forward
    over more new tokens never costs less; see theory.nondecreasing), t_draft 0 without a draft, and the source."""
    draft = raw.get("draft_token_s")
    return {
        "verify_s": theory.nondecreasing(raw["verify_s"]),
        "draft_token_s": draft if draft is not None else 0.0,
        "source": CURVE_SOURCE.format(timing=raw["timing"]),
    }


def curve(cfg, m: Metrics, energy: Optional[Energy], steps: TimedSteps, phase: Phase, base: Optional[Phase]):
    """theory.cost_curve for measurement.cost_model=true -> (curve, None) or (None, why not); (None, None) when the
    curve was not asked for."""
    if cfg.speculation.method == "none" or not cfg.measurement.cost_model:
        return None, None
    k = cfg.speculation.num_speculative_tokens
    if k is None or not m.num_drafts:
        return None, "no fixed k or no draft step was counted"
    if steps.raw is None:
        return None, steps.unsupported
    joules = (energy.baseline_joules_per_token, energy.energy_ratio) if energy and energy.energy_ratio else None
    alpha = theory.fit_alpha(m.accepted_tokens or 0, m.num_drafts or 0, m.drafted_tokens or 0)
    counts = phase.acceptance()
    recorded = counts.steps if counts else None
    timeline = _timeline(phase, base)
    return theory.cost_curve(m, k, step_costs(steps.raw), alpha, joules, steps=recorded, timeline=timeline), None
