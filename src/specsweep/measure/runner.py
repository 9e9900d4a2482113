"""Warm up, time repeated passes over the prompts, pair them with a no-speculation baseline, compute metrics."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any, Dict, List, Optional

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
    sync = getattr(engine, "synchronize", None) or (lambda: None)  # optional: wait for the device at window edges
    for rep in range(cfg.measurement.repetitions):
        progress.update(task, description=f"{label}: repetition {rep + 1}/{cfg.measurement.repetitions}")
        outputs: List[Generation] = []
        for chunk in batches:
            sync()
            meter.begin(label)
            start = time.perf_counter()
            outputs.extend(engine.generate(chunk))
            sync()
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


# Baselines measured earlier in this process (a Hydra basic-launcher sweep), by baseline_key.
_baselines: Dict[str, Phase] = {}


# The measured draft/target cost ratio c, by (baseline key, method, draft): the draft is timed once per sweep.
_cost_ratios: Dict[tuple, Dict[str, Any]] = {}


def baseline_config(cfg):
    base = copy.deepcopy(cfg)
    base.speculation.method = "none"
    base.speculation.num_speculative_tokens = None
    base.speculation.draft_model = None
    base.speculation.ngram_min = base.speculation.ngram_max = base.speculation.draft_tp_size = None
    base.speculation.backend_overrides = {}
    return base


def _peak_memory(engines) -> Dict[str, Any]:
    for engine in engines:
        reported = getattr(engine, "peak_memory", lambda: None)()
        if reported:
            return reported
    return {
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_memory_source": "process peak RSS since start (includes every model loaded in this process)",
    }


def summarize(cfg, prompts: List[Prompt], spec: Phase, base: Optional[Phase]) -> Dict[str, Any]:
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
        if cfg.backend.name == "pytorch" and getattr(cfg.backend, "dtype", "float32") != "float32":
            lossless["note"] = (
                f"{cfg.backend.dtype} is not bit-exact between batched verification and one-token decoding: "
                "greedy outputs may diverge from the baseline; float32 matches exactly"
            )
    return {"metrics": m, "stats": stats, "per_prompt": per_prompt, "lossless": lossless,
            "energy": energy_section(spec, base, acceptance.accepted if acceptance else None)}


def run(cfg, prompts: List[Prompt], build_engine, meter: EnergyMeter) -> Dict[str, Any]:
    """build_engine(cfg) -> a loaded Backend. Returns the measured sections of result.json."""
    speculative = cfg.speculation.method != "none"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as progress:
        timing: Dict[str, float] = {}
        base_phase: Optional[Phase] = None
        baseline_info: Dict[str, Any] = {"measured": False}
        engines = []
        if speculative and cfg.measurement.baseline:
            key = baseline_key(cfg)
            base_phase = _baselines.get(key)
            if base_phase is None:
                start = time.perf_counter()
                base_engine = build_engine(baseline_config(cfg))
                timing["baseline_load_s"] = time.perf_counter() - start
                base_phase = measure_phase(base_engine, prompts, cfg, meter, "baseline", progress)
                base_engine.close()
                _baselines.clear()
                _baselines[key] = base_phase
                baseline_info = {"measured": True, "source": "measured in this job", "key": key}
            else:
                baseline_info = {"measured": True, "source": "reused: measured earlier in this process with the same key", "key": key}
        start = time.perf_counter()
        engine = build_engine(cfg)
        timing["load_s"] = time.perf_counter() - start
        engines.append(engine)
        spec_phase = measure_phase(engine, prompts, cfg, meter, "speculative" if speculative else "no speculation", progress)
        if not speculative:  # a no-speculation job is itself the baseline of later jobs with the same key
            _baselines.clear()
            _baselines[baseline_key(cfg)] = spec_phase
    out = summarize(cfg, prompts, spec_phase, base_phase)
    out["metrics"].update(_peak_memory(engines))
    out["baseline"] = baseline_info
    timing["generation_s"] = spec_phase.seconds + (base_phase.seconds if baseline_info.get("source") == "measured in this job" else 0.0)
    out["timing"] = timing
    out["environment"] = engine.environment()
    engine.close()
    cost: Dict[str, Any] = {}
    if speculative:
        cost_key = (baseline_key(cfg), cfg.speculation.method, draft_reference(cfg))
        if cost_key not in _cost_ratios:
            target_tpot = median([t for g in base_phase.all() if (t := metrics.tpot_s(g)) is not None] or [0.0]) if base_phase else None
            start = time.perf_counter()
            _cost_ratios.clear()
            _cost_ratios[cost_key] = theory.measure_cost_ratio(cfg, prompts, build_engine, baseline_config(cfg), target_tpot)
            timing["cost_ratio_s"] = time.perf_counter() - start
        cost = _cost_ratios[cost_key]
    out["theory"] = theory.section(cfg.speculation.method, cfg.speculation.num_speculative_tokens, out["metrics"], cost)
    return out
