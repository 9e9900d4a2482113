"""One job's measurement, as a recipe: measure the speculative engine and its paired no-speculation baseline (one
engine per side, measure/phases.py, paired as measure/baseline.py says), read the speculative engine's facts, time
its forwards for the cost model while it is still open (measure/cost_model.py), close every engine, take the cost
ratio c, and build the result sections once from what was gathered (measure/summary.py)."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from specsweep.core import Prompt
from specsweep.energy import EnergyMeter
from specsweep.measure import baseline, cost_model, precision, summary
from specsweep.measure.phases import Engines, Phase, measure_interleaved, measure_phase
from specsweep.results.types import BaselineInfo, MeasuredSections


def run(
    cfg,
    prompts: List[Prompt],
    build_engine,
    meter: EnergyMeter,
    session,
    close_meter: Optional[Callable[[EnergyMeter], Optional[str]]] = None,
) -> MeasuredSections:
    """build_engine(cfg) -> a loaded Backend. Returns the measured sections of result.json. close_meter(meter), when
    given, runs as soon as the measuring ends, whatever happens, and returns the meter's error (energy.meter_error)
    or None."""
    try:
        with Engines(build_engine) as engines:
            spec, base, info, compared = _phases(cfg, prompts, engines, meter, session)
            facts = summary.EngineFacts.read(engines.open["speculative"])
            steps = cost_model.time_steps(cfg, engines.open["speculative"], prompts[0], spec, session)
        # after the engines are closed: where c needs the draft alone, that is one more engine
        cost, cost_ratio_s = cost_model.cost_ratio(
            cfg, prompts, build_engine, facts.no_cost_ratio, steps, base, session
        )
    finally:
        meter_error = close_meter(meter) if close_meter is not None else None
    measured = summary.Measured(spec, base, info, facts, dict(engines.load_s), steps, cost, cost_ratio_s, compared)
    return summary.sections(cfg, prompts, measured, meter_error)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _phases(cfg, prompts, engines: Engines, meter, session) -> Tuple[Phase, Optional[Phase], BaselineInfo, Dict]:
    """The speculative phase, its baseline's (None: none) and measurement.compare_k's phases by k, on open engines;
    the speculative engine stays open."""
    speculative = cfg.speculation.method != "none"
    with _progress() as progress:
        if speculative and cfg.measurement.baseline and baseline.pairing(cfg)[0] == "interleaved":
            engines.build("baseline", baseline.baseline_config(cfg))
            engines.build("speculative", cfg)
            for k in cfg.measurement.compare_k:  # each against the same baseline, in the same round robin
                engines.build(f"k={k}", cfg.with_k(k))
            phases = measure_interleaved(engines.open, prompts, cfg, meter, progress, precision.stop_rule(cfg))
            for k in cfg.measurement.compare_k:  # closed now: the cost model's forwards time the job's own k alone
                engines.close(f"k={k}")
            differences = baseline.native_differences(cfg, engines.open["speculative"])
            info = baseline.info(cfg, baseline.INTERLEAVED, differences)
            compared = {k: phases[f"k={k}"] for k in cfg.measurement.compare_k}
            return phases["speculative"], phases["baseline"], info, compared
        base, source = _phased_baseline(cfg, prompts, engines, meter, progress, session)
        label = "speculative" if speculative else "no speculation"
        spec = measure_phase(engines.build("speculative", cfg), prompts, cfg, meter, label, progress)
    if not speculative:  # a no-speculation job is itself the baseline of later jobs with the same key
        baseline.kept_baselines(cfg, session).put(baseline.baseline_key(cfg), spec)
    differences = baseline.native_differences(cfg, engines.open["speculative"]) if source else None
    return spec, base, baseline.info(cfg, source, differences), {}


def _phased_baseline(cfg, prompts, engines: Engines, meter, progress, session) -> Tuple[Optional[Phase], Optional[str]]:
    """The baseline phase measured before the speculative engine is built (and closed first: a backend may hold one
    engine at a time), or reused from the session when its key matches -> (phase, where it came from)."""
    if cfg.speculation.method == "none" or not cfg.measurement.baseline:
        return None, None
    phase = baseline.reused(cfg, session)
    if phase is not None:
        return phase, baseline.REUSED
    engine = engines.build("baseline", baseline.baseline_config(cfg))
    phase = measure_phase(engine, prompts, cfg, meter, "baseline", progress)
    engines.close("baseline")  # on a failure, leaving the job's `with Engines` closes it
    baseline.kept_baselines(cfg, session).put(baseline.baseline_key(cfg), phase)
    return phase, baseline.MEASURED
