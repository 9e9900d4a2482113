"""From what one job gathered (`Measured`: its phases, its engine's facts, its timings and the cost ratio) to the
sections of its result.json, each built once: metrics, stats, per-prompt rows, the lossless check, energy, the
baseline and timing sections, the theory (with the cost model's curve) and the engine's extra sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any, Callable, Dict, List, Optional, Tuple

from specsweep.core import Generation, Prompt, ratio, total_acceptance
from specsweep.energy import energy_section
from specsweep.measure import cost_model, metrics, precision, serving_stats, theory
from specsweep.measure.phases import Phase
from specsweep.results.types import (
    BaselineInfo,
    ComparedK,
    Lossless,
    MeasuredSections,
    Metrics,
    Mismatch,
    PromptRow,
    Spread,
    Stats,
    Timing,
)

PEAK_MEMORY = ("peak_memory_mb", "peak_memory_source", "peak_memory_per_device_mb")


@dataclass(frozen=True)
class EngineFacts:
    """What the measurement reads from the speculative engine, right after its phase (before the cost model's
    forwards, so peak memory is the measurement's)."""

    environment: Dict[str, Any]
    peak_memory: Dict[str, Any]
    lossless_note: Optional[str]
    acceptance: Dict[str, Optional[str]]  # Backend.acceptance_facts()
    extra_sections: Tuple[str, ...]  # Backend.extra_sections()
    no_cost_ratio: Optional[str]  # Backend.no_cost_ratio

    @classmethod
    def read(cls, engine) -> EngineFacts:
        memory = engine.peak_memory()
        return cls(
            environment=engine.environment(),
            peak_memory={name: memory.get(name) for name in PEAK_MEMORY},
            lossless_note=engine.lossless_note(),
            acceptance=engine.acceptance_facts(),
            extra_sections=tuple(engine.extra_sections()),
            no_cost_ratio=engine.no_cost_ratio,
        )


@dataclass(frozen=True)
class Measured:
    """Everything one job gathered; `sections` builds its result sections from it."""

    speculative: Phase
    baseline: Optional[Phase]
    baseline_info: BaselineInfo
    facts: EngineFacts
    load_s: Dict[str, float]  # engine load seconds by side ("speculative", "baseline")
    steps: cost_model.TimedSteps
    cost: Dict[str, Any]  # cost_model.cost_ratio's c and its source
    cost_ratio_s: Optional[float]
    compared: Dict[int, Phase] = field(default_factory=dict)  # measurement.compare_k's phases by k


def _spread(values, confidence: float) -> Spread:
    return Spread(**metrics.spread(values, confidence))


def phase_metrics(speculative: Phase, base: Optional[Phase], peak_memory: Optional[Dict[str, Any]] = None) -> Metrics:
    """The headline numbers of the speculative phase, paired with its baseline when there is one."""
    gens = speculative.all()
    tokens_per_s = ratio(speculative.output_tokens(), speculative.wall_s())
    baseline_tokens_per_s = ratio(base.output_tokens(), base.wall_s()) if base is not None else None
    return Metrics(
        tokens_per_s=tokens_per_s,
        wall_s=speculative.wall_s(),
        output_tokens=speculative.output_tokens(),
        ttft_s=metrics.median_known([g.ttft_s for g in gens]),
        tpot_s=metrics.median_known([metrics.tpot_s(g) for g in gens]),
        baseline_tokens_per_s=baseline_tokens_per_s,
        baseline_wall_s=base.wall_s() if base is not None else None,
        speedup=ratio(tokens_per_s, baseline_tokens_per_s) if tokens_per_s else None,
        **metrics.acceptance_metrics(speculative.acceptance()),
        **(peak_memory or {}),
    )


def _stats(cfg, speculative: Phase, base: Optional[Phase], per_prompt: List[PromptRow], pairing: str) -> Stats:
    """Spreads over generations, and (with a baseline) of the per-prompt and per-round speedups."""
    gens, confidence = speculative.all(), cfg.measurement.confidence
    return Stats(
        tokens_per_s=_spread([metrics.tokens_per_s(g) for g in gens], confidence),
        ttft_s=_spread([g.ttft_s for g in gens], confidence),
        tpot_s=_spread([metrics.tpot_s(g) for g in gens], confidence),
        speedup=_spread([r.speedup for r in per_prompt], confidence) if base is not None else None,
        baseline_tokens_per_s=(
            _spread([metrics.tokens_per_s(g) for g in base.all()], confidence) if base is not None else None
        ),
        paired_speedup=precision.precision(cfg, speculative, base, pairing),
    )


def _prompt_row(prompt: Prompt, speculative: List[Generation], base: List[Generation], greedy: bool) -> PromptRow:
    """One prompt's row from its speculative and baseline generations (one per repetition; the first one's output)."""
    acceptance = metrics.acceptance_metrics(total_acceptance([g.acceptance for g in speculative]))
    tokens_per_s = median([metrics.tokens_per_s(g) for g in speculative]) if speculative else None
    baseline_tokens_per_s = median([metrics.tokens_per_s(g) for g in base]) if base else None
    compared = bool(greedy and speculative and base)
    return PromptRow(
        id=prompt.id,
        category=prompt.category,
        prompt_tokens=speculative[0].prompt_tokens if speculative else None,
        output_tokens=metrics.output_tokens(speculative[0]) if speculative else None,
        tokens_per_s=tokens_per_s,
        acceptance_rate=acceptance["acceptance_rate"],
        mean_acceptance_length=acceptance["mean_acceptance_length"],
        baseline_tokens_per_s=baseline_tokens_per_s,
        speedup=ratio(tokens_per_s, baseline_tokens_per_s),
        compared_to_baseline=compared,
        first_mismatch=metrics.first_mismatch(speculative[0].output_ids, base[0].output_ids) if compared else None,
        output_text=speculative[0].text if speculative else None,
    )


def per_prompt(prompts: List[Prompt], speculative: Phase, base: Optional[Phase], greedy: bool) -> List[PromptRow]:
    spec_by_prompt = speculative.by_prompt()
    base_by_prompt = base.by_prompt() if base else {}
    return [_prompt_row(p, spec_by_prompt.get(p.id, []), base_by_prompt.get(p.id, []), greedy) for p in prompts]


def lossless(cfg, base: Optional[Phase], rows: List[PromptRow], note: Optional[str]) -> Lossless:
    """Greedy outputs against the baseline's, token for token; or why that was not checked."""
    if base is None:
        return Lossless(checked=False, reason="no baseline in this run")
    if cfg.generation.temperature != 0:
        return Lossless(
            checked=False, reason="sampling (temperature > 0): outputs are not expected to match token for token"
        )
    if not cfg.measurement.lossless_check:
        return Lossless(checked=False, reason="measurement.lossless_check=false")
    if cfg.speculation.synthetic_acceptance is not None:
        return Lossless(
            checked=False,
            reason=f"speculation.synthetic_acceptance={cfg.speculation.synthetic_acceptance}: drafts were accepted at "
            "a set rate, not by the target, so outputs are not the target's",
        )
    compared = [r for r in rows if r.compared_to_baseline]
    mismatches = [Mismatch(id=r.id, first_mismatch=r.first_mismatch) for r in compared if r.first_mismatch is not None]
    return Lossless(
        checked=True,
        match_rate=(len(compared) - len(mismatches)) / len(compared) if compared else None,
        prompts=len(compared),
        mismatches=mismatches,
        note=note,
    )


# The sections an engine may add (Backend.extra_sections), by name: each built from the job's gathered values.
EXTRA_SECTIONS: Dict[str, Callable[[Any, Measured], Any]] = {
    "serving": lambda cfg, m: serving_stats.serving_section(cfg, m.speculative, m.baseline, m.facts.acceptance),
}


def _timing(m: Measured) -> Timing:
    in_job = m.baseline is not None and m.baseline_info.measured_in_job
    return Timing(
        load_s=m.load_s.get("speculative"),
        generation_s=m.speculative.seconds
        + (m.baseline.seconds if in_job else 0.0)
        + sum(phase.seconds for phase in m.compared.values()),
        baseline_load_s=m.load_s.get("baseline"),
        cost_ratio_s=m.cost_ratio_s,
        cost_model_s=m.steps.seconds if m.steps.for_curve else None,
    )


def sections(cfg, prompts: List[Prompt], m: Measured, meter_error: Optional[str] = None) -> MeasuredSections:
    """The job's result sections, each built once from what it gathered. meter_error: the energy meter's failure
    to close, if any."""
    spec, base = m.speculative, m.baseline
    rows = per_prompt(prompts, spec, base, greedy=cfg.generation.temperature == 0)
    headline = phase_metrics(spec, base, m.facts.peak_memory)
    acceptance = spec.acceptance()
    energy = energy_section(spec, base, acceptance.accepted if acceptance else None, meter_error=meter_error)
    curve, curve_note = cost_model.curve(cfg, headline, energy, m.steps, spec, base)
    method, k = str(cfg.speculation.method), cfg.speculation.num_speculative_tokens
    return MeasuredSections(
        metrics=headline,
        stats=_stats(cfg, spec, base, rows, m.baseline_info.pairing),
        per_prompt=rows,
        lossless=lossless(cfg, base, rows, m.facts.lossless_note),
        energy=energy,
        baseline=m.baseline_info,
        timing=_timing(m),
        environment=m.facts.environment,
        theory=theory.section(method, k, headline, m.cost, curve, curve_note),
        compared=[_compared(cfg, prompts, k, phase, m) for k, phase in m.compared.items()],
        **{name: EXTRA_SECTIONS[name](cfg, m) for name in m.facts.extra_sections},
    )


def _compared(cfg, prompts: List[Prompt], k: int, phase: Phase, m: Measured) -> ComparedK:
    """One of measurement.compare_k's engines, paired with the job's baseline like the job's own k."""
    rows = per_prompt(prompts, phase, m.baseline, greedy=cfg.generation.temperature == 0)
    return ComparedK(
        k=k,
        metrics=phase_metrics(phase, m.baseline),
        paired_speedup=precision.precision(cfg, phase, m.baseline, m.baseline_info.pairing),
        lossless=lossless(cfg, m.baseline, rows, m.facts.lossless_note),
    )
