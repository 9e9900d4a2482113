"""Warm up, time repeated passes over the prompts, pair them with a no-speculation baseline, compute metrics."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from specsweep.backends.base import AcceptanceCounts, Generation, Prompt
from specsweep.energy import EnergyMeter, EnergyReading, energy_section
from specsweep.measure import metrics, theory
from specsweep.models.registry import draft_reference

log = logging.getLogger(__name__)


@dataclass
class Phase:
    """Everything measured for one engine (speculative or baseline) over all repetitions."""

    label: str
    generations: List[List[Generation]] = field(default_factory=list)  # [repetition][prompt]
    batch_walls: List[float] = field(default_factory=list)
    energy: List[EnergyReading] = field(default_factory=list)
    seconds: float = 0.0  # time spent in this phase, warm-up included

    def all(self) -> List[Generation]:
        return [g for rep in self.generations for g in rep]

    def by_prompt(self) -> Dict[str, List[Generation]]:
        out: Dict[str, List[Generation]] = {}
        for g in self.all():
            out.setdefault(g.prompt_id, []).append(g)
        return out

    def output_tokens(self) -> int:
        return sum(len(g.output_ids) for g in self.all())

    def wall_s(self) -> float:
        return sum(self.batch_walls)

    def acceptance(self) -> Optional[AcceptanceCounts]:
        counts = [g.acceptance for g in self.all() if g.acceptance is not None]
        if not counts:
            return None
        total = AcceptanceCounts()
        for c in counts:
            total = total.add(c)
        return total


def measure_phase(engine, prompts: List[Prompt], cfg, meter: EnergyMeter, label: str, progress: Progress) -> Phase:
    batch = cfg.generation.batch_size
    batches = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    task = progress.add_task(f"{label}: warm-up", total=cfg.measurement.warmup + cfg.measurement.repetitions * len(batches))
    started = time.perf_counter()
    for _ in range(cfg.measurement.warmup):
        engine.generate(batches[0])
        progress.advance(task)
    phase = Phase(label)
    for rep in range(cfg.measurement.repetitions):
        progress.update(task, description=f"{label}: repetition {rep + 1}/{cfg.measurement.repetitions}")
        outputs: List[Generation] = []
        for chunk in batches:
            engine.synchronize()  # a window starts and ends when the device is idle
            meter.begin(label)
            start = time.perf_counter()
            outputs.extend(engine.generate(chunk))
            engine.synchronize()
            phase.batch_walls.append(time.perf_counter() - start)
            phase.energy.append(meter.end(label))
            progress.advance(task)
        phase.generations.append(outputs)
    phase.seconds = time.perf_counter() - started
    return phase


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


def baseline_config(cfg):
    base = copy.deepcopy(cfg)
    base.speculation.method = "none"
    base.speculation.num_speculative_tokens = None
    base.speculation.draft_model = None
    base.speculation.ngram_min = base.speculation.ngram_max = base.speculation.draft_tp_size = None
    base.speculation.backend_overrides = {}
    return base


def summarize(cfg, prompts: List[Prompt], spec: Phase, base: Optional[Phase], lossless_note: Optional[str] = None) -> Dict[str, Any]:
    conf = cfg.measurement.confidence
    spec_gens = spec.all()
    acceptance = spec.acceptance()
    m: Dict[str, Any] = {
        "tokens_per_s": spec.output_tokens() / spec.wall_s() if spec.wall_s() else None,
        "wall_s": spec.wall_s(),
        "output_tokens": spec.output_tokens(),
        "ttft_s": median([g.ttft_s for g in spec_gens if g.ttft_s is not None] or [float("nan")]),
        "tpot_s": median([t for g in spec_gens if (t := metrics.tpot_s(g)) is not None] or [float("nan")]),
        "baseline_tokens_per_s": None,
        "baseline_wall_s": None,
        "speedup": None,
    }
    m.update(metrics.acceptance_metrics(acceptance))
    stats = {
        "tokens_per_s": metrics.spread([metrics.tokens_per_s(g) for g in spec_gens], conf),
        "ttft_s": metrics.spread([g.ttft_s for g in spec_gens], conf),
        "tpot_s": metrics.spread([metrics.tpot_s(g) for g in spec_gens], conf),
    }
    spec_by_prompt = spec.by_prompt()
    base_by_prompt = base.by_prompt() if base else {}
    per_prompt = []
    lossless_rows = []
    greedy = cfg.generation.temperature == 0
    for p in prompts:
        s = spec_by_prompt.get(p.id, [])
        row: Dict[str, Any] = {
            "id": p.id,
            "category": p.category,
            "prompt_tokens": s[0].prompt_tokens if s else None,
            "output_tokens": len(s[0].output_ids) if s else None,
            "tokens_per_s": median([metrics.tokens_per_s(g) for g in s]) if s else None,
        }
        counts = None
        for g in s:
            if g.acceptance is not None:
                counts = g.acceptance if counts is None else counts.add(g.acceptance)
        acc = metrics.acceptance_metrics(counts)
        row["acceptance_rate"], row["mean_acceptance_length"] = acc["acceptance_rate"], acc["mean_acceptance_length"]
        b = base_by_prompt.get(p.id, [])
        if b:
            row["baseline_tokens_per_s"] = median([metrics.tokens_per_s(g) for g in b])
            row["speedup"] = row["tokens_per_s"] / row["baseline_tokens_per_s"] if row["baseline_tokens_per_s"] else None
            if greedy and s:
                row["first_mismatch"] = metrics.first_mismatch(s[0].output_ids, b[0].output_ids)
                lossless_rows.append(row)
        row["output_text"] = s[0].text if s else None
        per_prompt.append(row)
    if base is not None:
        m["baseline_tokens_per_s"] = base.output_tokens() / base.wall_s() if base.wall_s() else None
        m["baseline_wall_s"] = base.wall_s()
        if m["baseline_tokens_per_s"] and m["tokens_per_s"]:
            m["speedup"] = m["tokens_per_s"] / m["baseline_tokens_per_s"]
        stats["speedup"] = metrics.spread([r.get("speedup") for r in per_prompt], conf)
        stats["baseline_tokens_per_s"] = metrics.spread([metrics.tokens_per_s(g) for g in base.all()], conf)
    if base is None:
        lossless = {"checked": False, "match_rate": None, "reason": "no baseline in this run"}
    elif not greedy:
        lossless = {"checked": False, "match_rate": None, "reason": "sampling (temperature > 0): outputs are not expected to match token for token"}
    elif not cfg.measurement.lossless_check:
        lossless = {"checked": False, "match_rate": None, "reason": "measurement.lossless_check=false"}
    else:
        matched = [r for r in lossless_rows if r["first_mismatch"] is None]
        lossless = {
            "checked": True,
            "match_rate": len(matched) / len(lossless_rows) if lossless_rows else None,
            "prompts": len(lossless_rows),
            "mismatches": [{"id": r["id"], "first_mismatch": r["first_mismatch"]} for r in lossless_rows if r["first_mismatch"] is not None],
        }
        if lossless_note:
            lossless["note"] = lossless_note
    return {"metrics": m, "stats": stats, "per_prompt": per_prompt, "lossless": lossless,
            "energy": energy_section(spec, base, acceptance.accepted if acceptance else None)}


def _baseline_phase(cfg, prompts, build_engine, meter, progress, session, timing) -> Tuple[Optional[Phase], Dict[str, Any]]:
    """The no-speculation phase this job is paired with: reused from the session when its key matches, else measured."""
    if cfg.speculation.method == "none" or not cfg.measurement.baseline:
        return None, {"measured": False, "measured_in_job": False}
    key = baseline_key(cfg)
    baselines = session.slot(BASELINES, capacity=1)
    phase = baselines.get(key)
    if phase is not None:
        return phase, {"measured": True, "measured_in_job": False, "key": key,
                       "source": "reused: measured earlier in this process with the same key"}
    start = time.perf_counter()
    engine = build_engine(baseline_config(cfg))
    timing["baseline_load_s"] = time.perf_counter() - start
    try:
        phase = measure_phase(engine, prompts, cfg, meter, "baseline", progress)
    finally:
        engine.close()
    baselines.put(key, phase)
    return phase, {"measured": True, "measured_in_job": True, "key": key, "source": "measured in this job"}


def _cost_ratio(cfg, prompts, build_engine, base_phase: Optional[Phase], session, timing) -> Dict[str, Any]:
    """The draft/target cost ratio c for the theory section, measured once per (baseline key, method, draft)."""
    key = (baseline_key(cfg), cfg.speculation.method, draft_reference(cfg))
    def measure() -> Dict[str, Any]:
        tpots = [t for g in base_phase.all() if (t := metrics.tpot_s(g)) is not None] if base_phase else []
        start = time.perf_counter()
        cost = theory.measure_cost_ratio(cfg, prompts, build_engine, baseline_config(cfg), median(tpots or [0.0]) if base_phase else None)
        timing["cost_ratio_s"] = time.perf_counter() - start
        return cost
    return session.slot(COST_RATIOS, capacity=1).get_or_create(key, measure)


def run(cfg, prompts: List[Prompt], build_engine, meter: EnergyMeter, session) -> Dict[str, Any]:
    """build_engine(cfg) -> a loaded Backend. Returns the measured sections of result.json."""
    speculative = cfg.speculation.method != "none"
    timing: Dict[str, float] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as progress:
        base_phase, baseline_info = _baseline_phase(cfg, prompts, build_engine, meter, progress, session, timing)
        start = time.perf_counter()
        engine = build_engine(cfg)
        timing["load_s"] = time.perf_counter() - start
        try:
            spec_phase = measure_phase(engine, prompts, cfg, meter, "speculative" if speculative else "no speculation", progress)
            out = summarize(cfg, prompts, spec_phase, base_phase, engine.lossless_note())
            out["metrics"].update(engine.peak_memory())
            out["environment"] = engine.environment()
        finally:
            engine.close()
    if not speculative:  # a no-speculation job is itself the baseline of later jobs with the same key
        session.slot(BASELINES, capacity=1).put(baseline_key(cfg), spec_phase)
    out["baseline"] = baseline_info
    timing["generation_s"] = spec_phase.seconds + (base_phase.seconds if baseline_info["measured_in_job"] else 0.0)
    out["timing"] = timing
    cost = _cost_ratio(cfg, prompts, build_engine, base_phase, session, timing) if speculative else {}
    out["theory"] = theory.section(cfg.speculation.method, cfg.speculation.num_speculative_tokens, out["metrics"], cost)
    return out
