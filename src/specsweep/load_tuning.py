"""k for each load level, on a served backend (`hydra/sweeper=k_by_load`, preset `hparams_search=k_by_load`).

Per concurrency level, one probe job at probe_k (served, paired with the same server without speculation at the same
load): its measured per-position acceptance and speedup predict the speedup at every k <= probe_k
(theory.load_curve, an estimate), and the `verify` best predicted k are then measured. A level's best is its best
measured k, or off (k=0) where no measured k beat the baseline. The levels' choices become one schedule
({from batch size: k}, speculation.k_schedule), written in each engine's own terms (vLLM
num_speculative_tokens_per_batch_size, TensorRT-LLM draft_len_schedule) and, where the backend takes one, measured at
every level beside the best fixed k and off. Everything lands in `<sweep dir>/k_by_load.json`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from specsweep.core import SCHEDULE_OPEN_END, schedule_ranges
from specsweep.measure.theory import LOAD_CURVE_MODEL, load_curve
from specsweep.tuning import invalid, launch

SUMMARY_FILE = "k_by_load.json"
OWNED = (
    "speculation.num_speculative_tokens",
    "speculation.k_schedule",
    "generation.concurrency",
    "measurement.cost_model",
)
TOLERANCE = 0.03  # the schedule holds at a level within 3% of the best of {off, fixed k}, or inside its interval


@dataclass
class LoadPoint:
    """One measured job: a fixed k (probe or verify) or the schedule, at one concurrency."""

    concurrency: int
    k: int  # the schedule's largest k for role=schedule
    role: str  # probe | verify | schedule | adaptive (the engine's own draft length; k is its start or cap)
    status: str
    run_dir: Optional[str]
    measured_speedup: Optional[float] = None
    ci_low: Optional[float] = None  # the paired speedup's 95% interval (null: one round)
    ci_high: Optional[float] = None
    predicted_speedup: Optional[float] = None  # theory.load_curve at this k (an estimate)
    measuring_s: Optional[float] = None  # the job's measuring time (timing.generation_s)
    variant: Optional[str] = None  # adaptive only: its name (backends' AdaptiveDraft.name)


@dataclass
class Level:
    concurrency: int
    curve: Optional[List[Dict[str, float]]] = None  # predicted {k, speedup} for k in 1..probe_k (an estimate)
    curve_note: Optional[str] = None  # why there is no curve
    best_k: Optional[int] = None  # 0: off; null: nothing was measured at this level
    best_speedup: Optional[float] = None  # off is the baseline itself: 1.0
    runner_up: Optional[Dict[str, Any]] = None  # {"k", "speedup"} (k=0: off)
    schedule_check: Optional[Dict[str, Any]] = None  # the schedule measured here against the best of off / fixed k
    adaptive: Dict[str, Optional[float]] = field(default_factory=dict)  # the engine's adaptive modes: name -> speedup


@dataclass
class LoadSummary:
    backend: str
    method: str
    probe_k: int
    model: str = LOAD_CURVE_MODEL
    levels: List[Level] = field(default_factory=list)
    points: List[LoadPoint] = field(default_factory=list)
    schedule: Dict[int, int] = field(default_factory=dict)  # speculation.k_schedule: {from batch size: k}
    engine_schedules: Dict[str, Any] = field(default_factory=dict)  # the schedule in each engine's own terms
    search_runs: int = 0  # probes and verifications (the schedule's own runs are checks, counted apart)
    search_s: float = 0.0  # their measuring time
    note: str = ""


def point_from(result: Optional[Dict[str, Any]], concurrency: int, k: int, role: str, run_dir) -> LoadPoint:
    point = LoadPoint(concurrency=concurrency, k=k, role=role, status="failed", run_dir=run_dir)
    if result is None:
        return point
    point.status = result.get("status", "failed")
    point.measuring_s = (result.get("timing") or {}).get("generation_s")
    if point.status == "ok":
        point.measured_speedup = (result.get("metrics") or {}).get("speedup")
        paired = (result.get("stats") or {}).get("paired_speedup") or {}
        point.ci_low, point.ci_high = paired.get("ci_low"), paired.get("ci_high")
    return point


def probe_curve(result: Optional[Dict[str, Any]], probe_k: int) -> tuple:
    """(predicted curve or None, why not) from a probe's result.json."""
    metrics = (result or {}).get("metrics") or {}
    if (result or {}).get("status") != "ok":
        return None, "the probe failed"
    per_position, speedup = metrics.get("acceptance_per_position"), metrics.get("speedup")
    if not per_position or len(per_position) < probe_k or not speedup:
        return None, "the probe has no per-position acceptance (the server exposes no counters)"
    return load_curve(per_position, probe_k, speedup), None


def candidates(curve: List[Dict[str, float]], verify: int, probe_k: int) -> List[int]:
    ranked = sorted(curve, key=lambda p: (-p["speedup"], p["k"]))
    return [p["k"] for p in ranked if p["k"] != probe_k][:verify]


def choose(level: Level, points: List[LoadPoint]) -> None:
    """The level's best of {off, each measured fixed k}, and the runner-up; off is the baseline (1.0)."""
    fixed = [p for p in points if p.role in ("probe", "verify")]
    options = [(p.measured_speedup, p.k) for p in fixed if p.measured_speedup is not None]
    if not options:
        return
    ranked = sorted(options + [(1.0, 0)], key=lambda o: (-o[0], o[1]))
    (level.best_speedup, level.best_k), runner = ranked[0], ranked[1]
    level.runner_up = {"k": runner[1], "speedup": runner[0]}


def schedule_of(levels: List[Level]) -> Dict[int, int]:
    """{from batch size: k}: each level's best k from its concurrency up (the lowest from batch size 1), a level
    that measured nothing carrying the one below, equal neighbours merged."""
    out: Dict[int, int] = {}
    for level in sorted(levels, key=lambda lv: lv.concurrency):
        if level.best_k is None:
            continue
        start = level.concurrency if out else 1
        if not out or out[max(out)] != level.best_k:
            out[start] = level.best_k
    return out


def engine_schedules(schedule: Dict[int, int]) -> Dict[str, Any]:
    """The schedule as each engine that has one takes it (what speculation.k_schedule maps to)."""
    from specsweep.backends.tensorrt.mapping import draft_len_schedule

    if not schedule or max(schedule.values()) == 0:
        return {}
    return {
        "vllm": {
            "num_speculative_tokens_per_batch_size": [list(r) for r in schedule_ranges(schedule, SCHEDULE_OPEN_END)]
        },
        "tensorrt": {"draft_len_schedule": draft_len_schedule(schedule)},
    }


def check_schedule(level: Level, point: LoadPoint) -> Dict[str, Any]:
    """The schedule at this level against the best of {off, fixed k}: held when within TOLERANCE or when the best's
    speedup lies inside the schedule's own interval."""
    best = level.best_speedup if level.best_speedup is not None else 1.0
    speedup = point.measured_speedup
    if speedup is None:
        return {"speedup": None, "best": best, "held": None, "how": f"the schedule's job {point.status}"}
    share = speedup / best
    inside = point.ci_low is not None and point.ci_low <= best <= point.ci_high
    held = share >= 1.0 - TOLERANCE or inside
    how = f"{share:.3f} of the best" + (" (inside its interval)" if inside else "")
    return {
        "speedup": speedup,
        "ci": [point.ci_low, point.ci_high],
        "best": best,
        "share": share,
        "held": held,
        "how": how,
    }


class KByLoadSearch:
    """The sweep: probe per level, verify the best predicted, choose per level, then measure the schedule."""

    def __init__(self, levels: List[int], probe_k: int, verify: int, sweep_dir: str, check: bool = True, compose=None):
        self.levels, self.probe_k, self.verify, self.check = sorted(set(levels)), probe_k, verify, check
        self.compose = compose  # job overrides -> composed DictConfig (None: specsweep's compose_config)
        self.sweep_dir = Path(sweep_dir)
        self.job_idx = 0

    def _launch(self, launcher, jobs: List[List[str]]) -> List[tuple]:
        out = launch(launcher, jobs, self.job_idx)
        self.job_idx += len(jobs)
        return out

    @staticmethod
    def overrides(arguments: List[str], concurrency: int, k: int, schedule: Optional[Dict[int, int]] = None):
        kept = [a for a in arguments if a.split("=")[0].lstrip("+~") not in OWNED]
        extra = [f"generation.concurrency={concurrency}", f"speculation.num_speculative_tokens={k}"]
        if schedule:
            extra.append("+speculation.k_schedule={" + ",".join(f"{b}:{v}" for b, v in sorted(schedule.items())) + "}")
        return kept + extra

    def run(self, launcher, arguments: List[str]) -> LoadSummary:
        summary = LoadSummary(backend="", method="", probe_k=self.probe_k)
        summary.levels = [Level(concurrency=c) for c in self.levels]
        probes = self._launch(launcher, [self.overrides(arguments, c, self.probe_k) for c in self.levels])
        planned = []
        for level, (result, run_dir) in zip(summary.levels, probes):
            summary.backend = summary.backend or (result or {}).get("backend", "")
            summary.method = summary.method or (result or {}).get("method", "")
            summary.points.append(point_from(result, level.concurrency, self.probe_k, "probe", run_dir))
            level.curve, level.curve_note = probe_curve(result, self.probe_k)
            planned += [(level, k) for k in self._verifiable(level, arguments)]
        jobs = [self.overrides(arguments, level.concurrency, k) for level, k in planned]
        for (level, k), (result, run_dir) in zip(planned, self._launch(launcher, jobs)):
            summary.points.append(point_from(result, level.concurrency, k, "verify", run_dir))
        for point in summary.points:
            level = next(lv for lv in summary.levels if lv.concurrency == point.concurrency)
            point.predicted_speedup = next((p["speedup"] for p in level.curve or [] if p["k"] == point.k), None)
        for level in summary.levels:
            choose(level, [p for p in summary.points if p.concurrency == level.concurrency])
        summary.search_runs = len(summary.points)
        summary.search_s = sum(p.measuring_s or 0.0 for p in summary.points)
        summary.schedule = schedule_of(summary.levels)
        summary.engine_schedules = engine_schedules(summary.schedule)
        self._measure_schedule(launcher, arguments, summary)
        self._measure_adaptive(launcher, arguments, summary)
        self._write(summary)
        return summary

    def _verifiable(self, level: Level, arguments: List[str]) -> List[int]:
        """The `verify` best predicted k at this level that make a valid job (an engine may refuse a small k:
        llama.cpp's n-gram drafts need k >= the n-gram size)."""
        ranked = candidates(level.curve, len(level.curve), self.probe_k) if level.curve else []
        valid = [k for k in ranked if invalid(self.overrides(arguments, level.concurrency, k), self.compose) is None]
        return valid[: self.verify]

    def _measure_schedule(self, launcher, arguments: List[str], summary: LoadSummary) -> None:
        """The schedule run by the engine itself at every level, where the backend takes one."""
        from specsweep.backends import registry

        declaration = registry().get(summary.backend)
        if not summary.schedule or max(summary.schedule.values()) == 0:
            summary.note = "speculation paid at no level measured: the schedule is off everywhere"
            return
        if declaration is None or not declaration.k_schedule or not self.check:
            name = summary.backend or "this backend"
            summary.note = f"{name} takes no per-batch-size k: the schedule is reported, not run (vllm_server runs it)"
            return
        top = max(summary.schedule.values())
        jobs = [self.overrides(arguments, level.concurrency, top, summary.schedule) for level in summary.levels]
        for level, (result, run_dir) in zip(summary.levels, self._launch(launcher, jobs)):
            point = point_from(result, level.concurrency, top, "schedule", run_dir)
            summary.points.append(point)
            level.schedule_check = check_schedule(level, point)

    def _measure_adaptive(self, launcher, arguments: List[str], summary: LoadSummary) -> None:
        """Each adaptive draft length the engine has (llama.cpp's p_min, ...) at every level: started at the level's
        best k (the probe's where off won), or capped at probe_k."""
        from specsweep.backends import registry

        declaration = registry().get(summary.backend)
        variants = declaration.adaptive_drafts(summary.method) if declaration else ()
        planned = [
            (level, v, level.best_k if v.k == "start" and level.best_k else self.probe_k)
            for v in variants
            for level in summary.levels
        ]
        jobs = [self.overrides(arguments, level.concurrency, k) + v.overrides() for level, v, k in planned]
        for (level, variant, k), (result, run_dir) in zip(planned, self._launch(launcher, jobs) if jobs else []):
            point = point_from(result, level.concurrency, k, "adaptive", run_dir)
            point.variant = variant.name
            summary.points.append(point)
            level.adaptive[variant.name] = point.measured_speedup

    def _write(self, summary: LoadSummary) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        path = self.sweep_dir / SUMMARY_FILE
        path.write_text(json.dumps(asdict(summary), indent=2) + "\n")
        print(report_lines(summary, path), file=sys.stderr)


def _x(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}x"


def report_lines(summary: LoadSummary, path: Path) -> str:
    lines = [
        f"specsweep k_by_load: {summary.backend} {summary.method}, probe k={summary.probe_k}; "
        f"search: {summary.search_runs} measured runs, {summary.search_s:.0f} s measuring",
        f"  {'concurrency':>11} {'best k':>6} {'speedup':>8} {'runner-up':>14} {'schedule':>9}  check",
    ]
    for level in summary.levels:
        best = "n/a" if level.best_k is None else ("off" if level.best_k == 0 else str(level.best_k))
        runner = level.runner_up or {}
        runner_text = f"k={runner['k']} {_x(runner['speedup'])}" if runner else "n/a"
        check = level.schedule_check or {}
        held = {True: "held", False: "MISSED", None: "-"}[check.get("held")]
        lines.append(
            f"  {level.concurrency:>11} {best:>6} {_x(level.best_speedup):>8} {runner_text:>14} "
            f"{_x(check.get('speedup')):>9}  {held} {check.get('how', level.curve_note or '')}".rstrip()
        )
    for name in {n for level in summary.levels for n in level.adaptive}:
        speedups = ", ".join(f"c={lv.concurrency} {_x(lv.adaptive.get(name))}" for lv in summary.levels)
        lines.append(f"  the engine's adaptive {name}: {speedups}")
    lines.append(f"  schedule (from batch size: k): {summary.schedule or 'none'}")
    for engine, native in summary.engine_schedules.items():
        lines.append(f"    {engine}: {json.dumps(native)}")
    if summary.note:
        lines.append(f"  note: {summary.note}")
    lines.append(f"  written to {path}")
    return "\n".join(lines)
