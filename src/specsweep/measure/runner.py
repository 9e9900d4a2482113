"""Warm up, time repeated passes over the prompts, pair them with a no-speculation baseline, compute metrics."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from specsweep.core import AcceptanceCounts, Generation, Prompt
from specsweep.energy import EnergyMeter, EnergyReading, energy_section
from specsweep.measure import load, metrics, theory
from specsweep.models.resolve import draft_reference
from specsweep.results.types import (
    BaselineInfo,
    Lossless,
    MeasuredSections,
    Metrics,
    Mismatch,
    PromptRow,
    Spread,
    Stats,
    Timing,
)

log = logging.getLogger(__name__)


@dataclass
class Phase:
    """Everything measured for one engine (speculative or baseline) over all repetitions."""

    label: str
    generations: List[List[Generation]] = field(default_factory=list)  # [repetition][prompt]
    batch_walls: List[float] = field(default_factory=list)
    energy: List[EnergyReading] = field(default_factory=list)
    seconds: float = 0.0  # time spent in this phase, warm-up included
    # acceptance per timed call, from engines that count a window rather than each generation (servers)
    window_acceptance: List[AcceptanceCounts] = field(default_factory=list)

    def all(self) -> List[Generation]:
        return [g for rep in self.generations for g in rep]

    def by_prompt(self) -> Dict[str, List[Generation]]:
        out: Dict[str, List[Generation]] = {}
        for g in self.all():
            out.setdefault(g.prompt_id, []).append(g)
        return out

    def output_tokens(self) -> int:
        return sum(metrics.output_tokens(g) for g in self.all())

    def wall_s(self) -> float:
        return sum(self.batch_walls)

    def acceptance(self) -> Optional[AcceptanceCounts]:
        counts = [g.acceptance for g in self.all() if g.acceptance is not None] or self.window_acceptance
        if not counts:
            return None
        total = AcceptanceCounts()
        for c in counts:
            total = total + c
        return total


def _batches(prompts: List[Prompt], cfg) -> List[List[Prompt]]:
    if type(cfg.backend).served:  # one load run over every prompt per timed call (generation.concurrency in flight)
        return [prompts]
    size = cfg.generation.batch_size
    return [prompts[i : i + size] for i in range(0, len(prompts), size)]


def _window(engine, chunk: List[Prompt], meter: EnergyMeter, phase: Phase, outputs: List[Generation]) -> None:
    """One timed and metered generation of a batch; a window starts and ends when the device is idle."""
    engine.synchronize()
    begin = getattr(engine, "begin_window", None)  # outside the timed window: e.g. reading a server's counters
    if begin is not None:
        begin()
    meter.begin(phase.label)
    start = time.perf_counter()
    outputs.extend(engine.generate(chunk))
    engine.synchronize()
    phase.batch_walls.append(time.perf_counter() - start)
    phase.energy.append(meter.end(phase.label))
    window_of = getattr(engine, "window_acceptance", None)  # after the window; duck-typed test fakes lack both hooks
    window = window_of() if window_of is not None else None
    if window is not None:
        phase.window_acceptance.append(window)


def measure_phase(engine, prompts: List[Prompt], cfg, meter: EnergyMeter, label: str, progress: Progress) -> Phase:
    """Warm up, then every repetition over every batch on one engine."""
    batches = _batches(prompts, cfg)
    task = progress.add_task(
        f"{label}: warm-up", total=cfg.measurement.warmup + cfg.measurement.repetitions * len(batches)
    )
    started = time.perf_counter()
    for _ in range(cfg.measurement.warmup):
        engine.generate(batches[0])
        progress.advance(task)
    phase = Phase(label)
    for rep in range(cfg.measurement.repetitions):
        progress.update(task, description=f"{label}: repetition {rep + 1}/{cfg.measurement.repetitions}")
        outputs: List[Generation] = []
        for chunk in batches:
            _window(engine, chunk, meter, phase, outputs)
            progress.advance(task)
        phase.generations.append(outputs)
    phase.seconds = time.perf_counter() - started
    return phase


def measure_interleaved(engines: Dict[str, Any], prompts: List[Prompt], cfg, meter: EnergyMeter, progress: Progress):
    """The engines warm up, then for every repetition and batch each engine generates once, the one going first
    rotating from batch to batch and repetition to repetition: whatever the machine does meanwhile (clock changes,
    other load) lands on every side of the speedup. engines: label -> engine (a baseline and one or more speculative
    configurations sharing it), in order. Returns label -> Phase."""
    batches = _batches(prompts, cfg)
    reps = cfg.measurement.repetitions
    total = len(engines) * (cfg.measurement.warmup + reps * len(batches))
    task = progress.add_task("interleaved: warm-up", total=total)
    started = time.perf_counter()
    for engine in engines.values():
        for _ in range(cfg.measurement.warmup):
            engine.generate(batches[0])
            progress.advance(task)
    phases = {label: Phase(label) for label in engines}
    for rep in range(reps):
        progress.update(task, description=f"interleaved: repetition {rep + 1}/{reps}")
        outputs: Dict[str, List[Generation]] = {label: [] for label in engines}
        for i, chunk in enumerate(batches):
            labels = list(engines)
            turn = (rep + i) % len(labels)
            order = labels[turn:] + labels[:turn]  # rotate who goes first (two engines: alternate)
            for label in order:
                _window(engines[label], chunk, meter, phases[label], outputs[label])
                progress.advance(task)
        for label, phase in phases.items():
            phase.generations.append(outputs[label])
    for phase in phases.values():  # the time is shared: split evenly (Timing.generation_s adds it back up)
        phase.seconds = (time.perf_counter() - started) / len(phases)
    return phases


def baseline_key(cfg) -> str:
    """Everything a no-speculation measurement depends on; equal keys give interchangeable baselines."""
    parts = {
        "model": cfg.model.target,
        "backend": asdict(cfg.backend),
        "dataset": asdict(cfg.dataset),
        "generation": asdict(cfg.generation),
        "measurement": {"warmup": cfg.measurement.warmup, "repetitions": cfg.measurement.repetitions},
        "energy": asdict(cfg.energy),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Session slots: the last baseline measured in this process (by baseline_key), and the measured draft/target cost
# ratio c (by baseline key, method and draft): a sweep measures each once.
BASELINES = "runner.baselines"
COST_RATIOS = "runner.cost_ratios"
# Served jobs pair each load level with its own baseline (generation.concurrency is in the key); a sweep such as
# speculation=none,ngram generation.concurrency=1,4 runs every `none` job first, so their baselines are all kept.
SERVED_BASELINES, SERVED_BASELINE_CAPACITY = "runner.baselines.served", 16


SERVED_NO_COST_RATIO = "not measured on a served backend (timing the draft alone would start another server)"


def _baselines(cfg, session):
    if type(cfg.backend).served:
        return session.slot(SERVED_BASELINES, capacity=SERVED_BASELINE_CAPACITY)
    return session.slot(BASELINES, capacity=1)


def baseline_config(cfg):
    base = copy.deepcopy(cfg)
    base.speculation.method = "none"
    base.speculation.num_speculative_tokens = None
    base.speculation.draft_model = None
    base.speculation.ngram_min = base.speculation.ngram_max = base.speculation.draft_tp_size = None
    base.speculation.backend_overrides = {}
    return base


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    return num / den if num is not None and den else None


def _median(values: List[Optional[float]]) -> float:
    """Median of the known values; NaN (written as null) when none is known."""
    return median([v for v in values if v is not None] or [float("nan")])


def _phase_metrics(speculative: Phase, base: Optional[Phase]) -> Metrics:
    """The headline numbers of the speculative phase, paired with its baseline when there is one."""
    gens = speculative.all()
    tokens_per_s = _ratio(speculative.output_tokens(), speculative.wall_s())
    baseline_tokens_per_s = _ratio(base.output_tokens(), base.wall_s()) if base is not None else None
    return Metrics(
        tokens_per_s=tokens_per_s,
        wall_s=speculative.wall_s(),
        output_tokens=speculative.output_tokens(),
        ttft_s=_median([g.ttft_s for g in gens]),
        tpot_s=_median([metrics.tpot_s(g) for g in gens]),
        baseline_tokens_per_s=baseline_tokens_per_s,
        baseline_wall_s=base.wall_s() if base is not None else None,
        speedup=_ratio(tokens_per_s, baseline_tokens_per_s) if tokens_per_s else None,
        **metrics.acceptance_metrics(speculative.acceptance()),
    )


def _spread(values, confidence: float) -> Spread:
    return Spread(**metrics.spread(values, confidence))


def _stats(speculative: Phase, base: Optional[Phase], per_prompt: List[PromptRow], confidence: float) -> Stats:
    """Spreads over generations, and (with a baseline) of the per-prompt speedups."""
    gens = speculative.all()
    stats = Stats(
        tokens_per_s=_spread([metrics.tokens_per_s(g) for g in gens], confidence),
        ttft_s=_spread([g.ttft_s for g in gens], confidence),
        tpot_s=_spread([metrics.tpot_s(g) for g in gens], confidence),
    )
    if base is not None:
        stats.speedup = _spread([r.speedup for r in per_prompt], confidence)
        stats.baseline_tokens_per_s = _spread([metrics.tokens_per_s(g) for g in base.all()], confidence)
    return stats


def _summed_acceptance(gens: List[Generation]) -> Optional[AcceptanceCounts]:
    counts = None
    for g in gens:
        if g.acceptance is not None:
            counts = g.acceptance if counts is None else counts + g.acceptance
    return counts


def _prompt_row(prompt: Prompt, speculative: List[Generation], base: List[Generation], greedy: bool) -> PromptRow:
    """One prompt's row from its speculative and baseline generations (one per repetition; the first one's output)."""
    acceptance = metrics.acceptance_metrics(_summed_acceptance(speculative))
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
        speedup=_ratio(tokens_per_s, baseline_tokens_per_s),
        compared_to_baseline=compared,
        first_mismatch=metrics.first_mismatch(speculative[0].output_ids, base[0].output_ids) if compared else None,
        output_text=speculative[0].text if speculative else None,
    )


def _per_prompt(prompts: List[Prompt], speculative: Phase, base: Optional[Phase], greedy: bool) -> List[PromptRow]:
    spec_by_prompt = speculative.by_prompt()
    base_by_prompt = base.by_prompt() if base else {}
    return [_prompt_row(p, spec_by_prompt.get(p.id, []), base_by_prompt.get(p.id, []), greedy) for p in prompts]


def _lossless(cfg, base: Optional[Phase], per_prompt: List[PromptRow], note: Optional[str]) -> Lossless:
    """Greedy outputs against the baseline's, token for token; or why that was not checked."""
    if base is None:
        return Lossless(checked=False, reason="no baseline in this run")
    if cfg.generation.temperature != 0:
        return Lossless(
            checked=False, reason="sampling (temperature > 0): outputs are not expected to match token for token"
        )
    if not cfg.measurement.lossless_check:
        return Lossless(checked=False, reason="measurement.lossless_check=false")
    compared = [r for r in per_prompt if r.compared_to_baseline]
    mismatches = [Mismatch(id=r.id, first_mismatch=r.first_mismatch) for r in compared if r.first_mismatch is not None]
    return Lossless(
        checked=True,
        match_rate=(len(compared) - len(mismatches)) / len(compared) if compared else None,
        prompts=len(compared),
        mismatches=mismatches,
        note=note,
    )


def summarize(
    cfg, prompts: List[Prompt], speculative: Phase, base: Optional[Phase], lossless_note: Optional[str] = None
) -> MeasuredSections:
    """The sections computed from the phases: metrics, stats, per-prompt rows, the lossless check and energy."""
    per_prompt = _per_prompt(prompts, speculative, base, greedy=cfg.generation.temperature == 0)
    acceptance = speculative.acceptance()
    return MeasuredSections(
        metrics=_phase_metrics(speculative, base),
        stats=_stats(speculative, base, per_prompt, cfg.measurement.confidence),
        per_prompt=per_prompt,
        lossless=_lossless(cfg, base, per_prompt, lossless_note),
        energy=energy_section(speculative, base, acceptance.accepted if acceptance else None),
    )


def _baseline_phase(
    cfg, prompts, build_engine, meter, progress, session, timing: Timing
) -> Tuple[Optional[Phase], BaselineInfo]:
    """The no-speculation phase this job is paired with: reused from the session when its key matches, else measured."""
    if cfg.speculation.method == "none" or not cfg.measurement.baseline:
        return None, BaselineInfo(measured=False, measured_in_job=False)
    key = baseline_key(cfg)
    baselines = _baselines(cfg, session)
    phase = baselines.get(key)
    if phase is not None:
        source = "reused: measured earlier in this process with the same key"
        return phase, BaselineInfo(measured=True, measured_in_job=False, key=key, source=source)
    start = time.perf_counter()
    engine = build_engine(baseline_config(cfg))
    timing.baseline_load_s = time.perf_counter() - start
    try:
        phase = measure_phase(engine, prompts, cfg, meter, "baseline", progress)
    finally:
        engine.close()
    baselines.put(key, phase)
    return phase, BaselineInfo(measured=True, measured_in_job=True, key=key, source="measured in this job")


def _cost_ratio(cfg, prompts, build_engine, base_phase: Optional[Phase], session, timing: Timing) -> Dict[str, Any]:
    """The draft/target cost ratio c for the theory section, measured once per (baseline key, method, draft)."""
    key = (baseline_key(cfg), cfg.speculation.method, draft_reference(cfg))

    def measure() -> Dict[str, Any]:
        tpots = [t for g in base_phase.all() if (t := metrics.tpot_s(g)) is not None] if base_phase else []
        target_tpot_s = median(tpots or [0.0]) if base_phase else None
        start = time.perf_counter()
        cost = theory.measure_cost_ratio(cfg, prompts, build_engine, baseline_config(cfg), target_tpot_s)
        timing.cost_ratio_s = time.perf_counter() - start
        return cost

    return session.slot(COST_RATIOS, capacity=1).get_or_create(key, measure)


def _sections(cfg, prompts, phase: Phase, base_phase: Optional[Phase], engine) -> MeasuredSections:
    sections = summarize(cfg, prompts, phase, base_phase, engine.lossless_note())
    sections.metrics = replace(sections.metrics, **_peak_memory(engine))
    sections.environment = engine.environment()
    if type(cfg.backend).served:
        sections.serving = load.serving_section(cfg, phase, base_phase, engine.acceptance_facts())
    return sections


def _speculative_phase(cfg, prompts, build_engine, meter, progress, base_phase, timing: Timing):
    """Load the job's own engine, measure it and summarize against the baseline -> (its phase, its sections)."""
    start = time.perf_counter()
    engine = build_engine(cfg)
    timing.load_s = time.perf_counter() - start
    label = "speculative" if cfg.speculation.method != "none" else "no speculation"
    try:
        phase = measure_phase(engine, prompts, cfg, meter, label, progress)
        sections = _sections(cfg, prompts, phase, base_phase, engine)
    finally:
        engine.close()
    return phase, sections


def _interleaved_phases(cfg, prompts, build_engine, meter, progress, timing: Timing):
    """Both engines loaded at once and measured interleaved -> (baseline phase, speculative phase, sections, info)."""
    start = time.perf_counter()
    base_engine = build_engine(baseline_config(cfg))
    timing.baseline_load_s = time.perf_counter() - start
    try:
        start = time.perf_counter()
        engine = build_engine(cfg)
        timing.load_s = time.perf_counter() - start
        try:
            engines = {"baseline": base_engine, "speculative": engine}
            phases = measure_interleaved(engines, prompts, cfg, meter, progress)
            sections = _sections(cfg, prompts, phases["speculative"], phases["baseline"], engine)
        finally:
            engine.close()
    finally:
        base_engine.close()
    source = "measured in this job, interleaved with the speculative generations"
    info = BaselineInfo(measured=True, measured_in_job=True, key=baseline_key(cfg), source=source)
    return phases["baseline"], phases["speculative"], sections, info


def _timeline(phase: Phase, base: Optional[Phase]) -> Optional[Dict[str, float]]:
    """Medians of the probe's generations and of its baseline's: what the curve needs besides the steps."""
    if base is None or not phase.all():
        return None
    values = {
        "tokens": median([len(g.output_ids) for g in phase.all()]),
        "baseline_ttft_s": _median([g.ttft_s for g in base.all()]),
        "baseline_tpot_s": _median([metrics.tpot_s(g) for g in base.all()]),
        "ttft_s": _median([g.ttft_s for g in phase.all()]),
        "tpot_s": _median([metrics.tpot_s(g) for g in phase.all()]),
    }
    return values if all(v == v for v in values.values()) else None  # NaN: a median had nothing to take


def _cost_curve(cfg, prompts, build_engine, sections: MeasuredSections, phases, timing: Timing):
    """theory.curve for measurement.cost_model=true -> (curve, None) or (None, why not)."""
    k, m = cfg.speculation.num_speculative_tokens, sections.metrics
    if k is None or not m.num_drafts:
        return None, "no fixed k or no draft step was counted"
    start = time.perf_counter()
    engine = build_engine(cfg)
    try:
        costs = engine.step_costs(prompts[0], k + 1)
    except NotImplementedError as err:
        return None, str(err)
    finally:
        engine.close()
    timing.cost_model_s = time.perf_counter() - start
    e = sections.energy
    energy = (e.baseline_joules_per_token, e.energy_ratio) if e and e.energy_ratio else None
    alpha = theory.fit_alpha(m.accepted_tokens or 0, m.num_drafts or 0, m.drafted_tokens or 0)
    phase, base = phases
    counts = phase.acceptance()
    steps = counts.steps if counts else None
    return theory.cost_curve(m, k, costs, alpha, energy, steps=steps, timeline=_timeline(phase, base)), None


def pairing(cfg) -> Tuple[str, str]:
    """How this job pairs its baseline with the speculative generations, and why."""
    blocker = type(cfg.backend).holds_one_engine
    if str(cfg.measurement.pairing) == "phased":
        return "phased", "measurement.pairing=phased"
    if blocker:
        return "phased", f"backend={cfg.backend.name}: {blocker}"
    return "interleaved", f"backend={cfg.backend.name} holds the baseline and the speculative engine at once"


def _peak_memory(engine) -> Dict[str, Any]:
    memory = engine.peak_memory()
    return {name: memory.get(name) for name in ("peak_memory_mb", "peak_memory_source", "peak_memory_per_device_mb")}


def run(cfg, prompts: List[Prompt], build_engine, meter: EnergyMeter, session) -> MeasuredSections:
    """build_engine(cfg) -> a loaded Backend. Returns the measured sections of result.json."""
    speculative = cfg.speculation.method != "none"
    timing = Timing()
    mode, why = pairing(cfg)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as progress:
        if speculative and cfg.measurement.baseline and mode == "interleaved":
            base_phase, spec_phase, sections, baseline_info = _interleaved_phases(
                cfg, prompts, build_engine, meter, progress, timing
            )
        else:
            base_phase, baseline_info = _baseline_phase(cfg, prompts, build_engine, meter, progress, session, timing)
            spec_phase, sections = _speculative_phase(cfg, prompts, build_engine, meter, progress, base_phase, timing)
    if baseline_info.measured:
        baseline_info.pairing, baseline_info.pairing_reason = mode, why
    if not speculative:  # a no-speculation job is itself the baseline of later jobs with the same key
        _baselines(cfg, session).put(baseline_key(cfg), spec_phase)
    sections.baseline = baseline_info
    timing.generation_s = spec_phase.seconds + (base_phase.seconds if baseline_info.measured_in_job else 0.0)
    sections.timing = timing
    if speculative and type(cfg.backend).served:  # timing the draft alone would start one more server per load level
        cost = {"cost_ratio": None, "cost_ratio_source": SERVED_NO_COST_RATIO}
    else:
        cost = _cost_ratio(cfg, prompts, build_engine, base_phase, session, timing) if speculative else {}
    sections.theory = theory.section(
        cfg.speculation.method, cfg.speculation.num_speculative_tokens, sections.metrics, cost
    )
    if speculative and cfg.measurement.cost_model:
        curve, why = _cost_curve(cfg, prompts, build_engine, sections, (spec_phase, base_phase), timing)
        sections.theory.curve, sections.theory.curve_note = curve, why
    return sections
