"""Theory-guided tuning of k (`hydra/sweeper=best_k`, preset `hparams_search=best_k`).

One probe job runs at a large k with `measurement.cost_model=true`: its per-position acceptance and timed forwards
predict the speedup at every k <= probe_k (`theory.curve`, see measure/theory.py). The best few predicted k values
are then measured for real and the best measured one is chosen. Where the backend pairs interleaved, the probe's k
and the candidates are measured again in one job, one round robin against one shared baseline
(`measurement.compare_k`), so the noise between separately measured baselines does not decide the choice; elsewhere
each candidate is an ordinary job with its own baseline. For prompt lookup, one probe per n-gram window (`windows`).
Where the engine has its own adaptive draft length (transformers: `BackendConfig.adaptive_drafts`), each variant is
then measured once beside the chosen k. Everything lands in `<sweep dir>/best_k.json`: the predicted curves, every
verified point with its prediction error (and the i.i.d. model's), the chosen k, the adaptive variants, and the
energy-optimal k where energy was measured.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

SUMMARY_FILE = "best_k.json"
OWNED = (
    "speculation.num_speculative_tokens",
    "speculation.ngram_max",
    "measurement.cost_model",
    "measurement.compare_k",
)


@dataclass
class Point:
    """One measured configuration."""

    k: int
    window: Optional[int]
    role: str  # probe | verify | adaptive (the engine picks the length; k is its start or cap, see `variant`)
    status: str
    run_dir: Optional[str]
    measured_speedup: Optional[float] = None
    predicted_speedup: Optional[float] = None
    iid_predicted_speedup: Optional[float] = None
    error: Optional[float] = None  # (predicted - measured) / measured
    iid_error: Optional[float] = None
    joules_per_token: Optional[float] = None
    wall_s: Optional[float] = None  # the job's measuring time (timing.generation_s)
    variant: Optional[str] = None  # adaptive only: its name (backends' AdaptiveDraft.name)
    variant_note: Optional[str] = None  # adaptive only: what k means for it and what the engine does
    mean_drafted: Optional[float] = None  # tokens drafted per draft step (metrics.drafted_tokens / num_drafts)
    ci: Optional[List[float]] = None  # the speedup's interval over its rounds [low, high] (null below 2 rounds)
    target_met: Optional[bool] = None  # whether that interval reached measurement.target_ci (null: no target)
    shared_baseline: Optional[str] = None  # the round-robin job that measured it beside the others (null: own job)


@dataclass
class Summary:
    method: str
    probe_k: int
    measured_runs: int  # jobs run
    points: List[Point] = field(default_factory=list)
    curves: Dict[str, Any] = field(default_factory=dict)  # window (or "default") -> theory.curve of its probe
    chosen: Optional[Point] = None  # the best measured fixed k (adaptive variants are reported beside it)
    energy_optimal: Optional[Dict[str, Any]] = None
    note: str = ""


def _relative_error(predicted: Optional[float], measured: Optional[float]) -> Optional[float]:
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured


def curve_point(curve: Optional[Dict[str, Any]], k: int) -> Dict[str, Any]:
    return next((p for p in (curve or {}).get("points", []) if p["k"] == k), {})


def candidates(curve: Dict[str, Any], verify: int, probe_k: int, allowed=lambda k: True) -> List[int]:
    """The `verify` k values with the highest predicted speedup, the probe's own k excluded (it is measured), as are
    those allowed(k) refuses (a k the engine would not run: llama.cpp's prompt lookup drafts at least ngram_max)."""
    ranked = sorted(curve["points"], key=lambda p: (-p["speedup"], p["k"]))
    runnable = (p["k"] for p in ranked if p["k"] != probe_k and allowed(p["k"]))  # lazy: allowed may compose a config
    return list(itertools.islice(runnable, verify))


def at_k(result: Optional[Dict[str, Any]], k: int) -> Optional[Dict[str, Any]]:
    """A job's result.json as seen from one of its k values: the job's own, or one of its `compared` engines (their
    metrics and precision, the job's status and timing). None: the job left no result, or did not measure k."""
    if result is None or result.get("k") == k:
        return result
    entry = next((c for c in result.get("compared") or [] if c.get("k") == k), None)
    if entry is None:
        return None
    stats = {"paired_speedup": entry.get("paired_speedup")}
    return {"status": result.get("status"), "metrics": entry.get("metrics"), "stats": stats, "timing": None}


def point_from(result: Optional[Dict[str, Any]], k: int, window, role: str, run_dir, curve) -> Point:
    """A measured point from its job's result.json (None: the job left none), with the curve's predictions."""
    predicted = curve_point(curve, k)
    point = Point(k=k, window=window, role=role, status="failed", run_dir=run_dir)
    point.predicted_speedup, point.iid_predicted_speedup = predicted.get("speedup"), predicted.get("iid_speedup")
    if result is None:
        return point
    metrics = result.get("metrics") or {}
    point.status = result.get("status", "failed")
    point.measured_speedup = metrics.get("speedup") if point.status == "ok" else None
    precision = (result.get("stats") or {}).get("paired_speedup") or {}
    if precision.get("ci_low") is not None:
        point.ci = [precision["ci_low"], precision["ci_high"]]
    point.target_met = precision.get("met")
    point.error = _relative_error(point.predicted_speedup, point.measured_speedup)
    point.iid_error = _relative_error(point.iid_predicted_speedup, point.measured_speedup)
    if metrics.get("num_drafts"):
        point.mean_drafted = metrics["drafted_tokens"] / metrics["num_drafts"]
    point.joules_per_token = (result.get("energy") or {}).get("joules_per_token")
    point.wall_s = (result.get("timing") or {}).get("generation_s")
    return point


def _interleaved(result: Optional[Dict[str, Any]]) -> bool:
    """Whether the probe's job paired its baseline interleaved: its backend can hold a round robin of engines."""
    return ((result or {}).get("baseline") or {}).get("pairing") == "interleaved"


def choose(points: Sequence[Point]) -> Optional[Point]:
    """The best measured fixed k (never a failed point, nor an adaptive variant)."""
    ok = [p for p in points if p.role != "adaptive" and _measured(p)]
    return max(ok, key=lambda p: (p.measured_speedup, -p.k)) if ok else None


def _measured(point: Point) -> bool:
    return point.measured_speedup is not None and not math.isnan(point.measured_speedup)


def energy_optimal(points: Sequence[Point], curves: Dict[str, Any]) -> Dict[str, Any]:
    measured = [p for p in points if p.joules_per_token is not None]
    predicted = {w: c.get("best_energy_k") for w, c in curves.items() if c and c.get("best_energy_k") is not None}
    if not measured and not predicted:
        return {"k": None, "reason": "energy was not measured (no counter on this machine, or energy=none)"}
    best = min(measured, key=lambda p: (p.joules_per_token, p.k)) if measured else None
    return {
        "k": best.k if best else None,
        "window": best.window if best else None,
        "measured_joules_per_token": best.joules_per_token if best else None,
        "predicted_best_energy_k": predicted,
    }


def launch(launcher, jobs: List[List[str]], first_idx: int) -> List[tuple]:
    """Launch a batch of jobs (override lists) -> [(its result.json or None, run dir)] in order; a job Hydra saw
    fail counts as failed whatever its result.json says."""
    from hydra.core.utils import JobStatus

    out = []
    for ret in launcher.launch(jobs, initial_job_idx=first_idx):
        run_dir = Path(ret.hydra_cfg.hydra.runtime.output_dir)
        path = run_dir / "result.json"
        result = json.loads(path.read_text()) if path.is_file() else None
        if ret.status == JobStatus.FAILED and result is not None:
            result["status"] = "failed"
        out.append((result, str(run_dir)))
    return out


def invalid(job: List[str], compose=None) -> Optional[str]:
    """Why this job's config is invalid (None: it validates), before anything is launched. compose(job) -> the
    composed DictConfig; inside a sweep, Hydra's own config loader (a second Hydra cannot be initialised there)."""
    from omegaconf import open_dict, read_write
    from omegaconf.errors import OmegaConfBaseException

    from specsweep.config.compose import compose_config, to_config
    from specsweep.config.validate import ConfigError, validate

    try:
        if compose is None:
            validate(compose_config(job))
            return None
        dcfg = compose(job)
        with read_write(dcfg), open_dict(dcfg):
            dcfg.pop("hydra", None)  # as Hydra hands a job its config
        validate(to_config(dcfg))
    except (ConfigError, OmegaConfBaseException) as err:
        return str(err)
    return None


class BestKSearch:
    """The sweep itself: probe(s), prediction, verification, choice, summary."""

    def __init__(self, probe_k: int, verify: int, windows: List[int], sweep_dir: str, adaptive=True, compose=None):
        self.probe_k, self.verify, self.windows, self.adaptive = probe_k, verify, windows, adaptive
        self.sweep_dir, self.compose = Path(sweep_dir), compose  # compose: see `invalid`
        self.job_idx = 0

    def _overrides(self, arguments: List[str], k: int, window: Optional[int], probe: bool) -> List[str]:
        kept = [a for a in arguments if a.split("=")[0].lstrip("+~") not in OWNED]
        extra = [f"speculation.num_speculative_tokens={k}", f"measurement.cost_model={str(probe).lower()}"]
        return kept + extra + ([f"speculation.ngram_max={window}"] if window is not None else [])

    def _runs(self, arguments: List[str], k: int, window: Optional[int]) -> bool:
        """Whether a job at k validates (the engine would run it)."""
        return invalid(self._overrides(arguments, k, window, False), self.compose) is None

    def _launch(self, launcher, jobs: List[List[str]]) -> List[tuple]:
        out = launch(launcher, jobs, self.job_idx)
        self.job_idx += len(jobs)
        return out

    def run(self, launcher, arguments: List[str]) -> Summary:
        windows: List[Optional[int]] = list(self.windows) or [None]
        probes = self._launch(launcher, [self._overrides(arguments, self.probe_k, w, True) for w in windows])
        summary = Summary(method="", probe_k=self.probe_k, measured_runs=len(probes))
        planned = []
        for window, (result, run_dir) in zip(windows, probes):
            curve = ((result or {}).get("theory") or {}).get("curve")
            summary.method = summary.method or (result or {}).get("method", "")
            summary.curves[str(window) if window is not None else "default"] = curve
            summary.points.append(point_from(result, self.probe_k, window, "probe", run_dir, curve))
            if curve:
                ks = candidates(curve, self.verify, self.probe_k, lambda k, w=window: self._runs(arguments, k, w))
                planned.append((window, curve, ks, _interleaved(result)))
        self._verify(launcher, arguments, planned, summary)
        summary.chosen = choose(summary.points)
        if self.adaptive and summary.chosen is not None:
            self._measure_adaptive(launcher, arguments, probes[0][0], summary)
        summary.energy_optimal = energy_optimal(summary.points, summary.curves)
        if not any(summary.curves.values()):
            summary.note = "no probe produced a curve (see the probe's theory.curve_note); nothing was verified"
        self._write(summary)
        return summary

    def _verify(self, launcher, arguments: List[str], planned: List[tuple], summary: Summary) -> None:
        """Measure each window's candidates: with the probe's k in one round robin on one baseline where the backend
        pairs interleaved (the probe's point is then this job's measurement of it), else one job per candidate."""
        jobs, points = [], []  # points: (k, window, role, curve, index of its job in jobs, shared)
        for window, curve, ks, shared in planned:
            if shared and ks:
                compare = f"measurement.compare_k=[{','.join(map(str, ks))}]"
                jobs.append(self._overrides(arguments, self.probe_k, window, False) + [compare])
                points.append((self.probe_k, window, "probe", curve, len(jobs) - 1, True))
                points += [(k, window, "verify", curve, len(jobs) - 1, True) for k in ks]
                continue
            for k in ks:
                jobs.append(self._overrides(arguments, k, window, False))
                points.append((k, window, "verify", curve, len(jobs) - 1, False))
        launched = self._launch(launcher, jobs) if jobs else []
        for k, window, role, curve, job, shared in points:
            result, run_dir = launched[job]
            if role == "probe":  # the round robin's measurement replaces the probe job's own
                summary.points = [p for p in summary.points if not (p.role == "probe" and p.window == window)]
            point = point_from(at_k(result, k), k, window, role, run_dir, curve)
            point.shared_baseline = run_dir if shared else None
            summary.points.append(point)
        summary.measured_runs += len(jobs)

    def _measure_adaptive(self, launcher, arguments: List[str], probe: Dict[str, Any], summary: Summary) -> None:
        """Each adaptive draft length the engine has, started (or capped) where the fixed-k search says, measured
        with its own interleaved baseline like every other point."""
        from specsweep.backends import registry

        declaration = registry().get(probe.get("backend", ""))
        variants = declaration.adaptive_drafts(probe.get("method", "")) if declaration else ()
        if not variants:
            return
        window = summary.chosen.window
        planned = [(v, summary.chosen.k if v.k == "start" else self.probe_k) for v in variants]
        jobs = [self._overrides(arguments, k, window, False) + v.overrides() for v, k in planned]
        for (variant, k), (result, run_dir) in zip(planned, self._launch(launcher, jobs)):
            point = point_from(result, k, window, "adaptive", run_dir, None)
            point.variant, point.variant_note = variant.name, f"k={k} is its {variant.k}; {variant.about}"
            summary.points.append(point)
        summary.measured_runs += len(jobs)

    def _write(self, summary: Summary) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / SUMMARY_FILE).write_text(json.dumps(asdict(summary), indent=2) + "\n")
        print(report_lines(summary, self.sweep_dir / SUMMARY_FILE), file=sys.stderr)


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _speedup(point: Point) -> str:
    if point.measured_speedup is None:
        return point.status
    interval = f" [{point.ci[0]:.3f}, {point.ci[1]:.3f}]" if point.ci else ""
    return f"{point.measured_speedup:.3f}x{interval}"


def report_lines(summary: Summary, path: Path) -> str:
    lines = [f"specsweep best_k: {summary.measured_runs} measured runs ({summary.method}, probe k={summary.probe_k})"]
    fixed = [p for p in summary.points if p.role != "adaptive"]
    for p in fixed:
        where = f" window={p.window}" if p.window is not None else ""
        predicted = f"{p.predicted_speedup:.3f}x" if p.predicted_speedup is not None else "n/a"
        lines.append(
            f"  {p.role:6} k={p.k}{where}: measured {_speedup(p)}, predicted {predicted} "
            f"(error {_pct(p.error)}; i.i.d. model {_pct(p.iid_error)})"
        )
    chosen = summary.chosen
    lines.append(f"  chosen: k={chosen.k} ({chosen.measured_speedup:.3f}x)" if chosen else "  chosen: none")
    shared = sorted({p.shared_baseline for p in fixed if p.shared_baseline})
    if shared:
        lines.append(f"  verified in one round robin against one baseline: {', '.join(shared)}")
    for p in summary.points:
        if p.role == "adaptive":
            drafted = f", {p.mean_drafted:.1f} tokens drafted per step" if p.mean_drafted is not None else ""
            lines.append(f"  beside it, adaptive {p.variant}: measured {_speedup(p)}{drafted}")
    if summary.note:
        lines.append(f"  note: {summary.note}")
    lines.append(f"  written to {path}")
    return "\n".join(lines)
