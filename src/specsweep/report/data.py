"""Read sweep results (results.jsonl rows + each job's result.json) into what the report shows. No plotting here."""

from __future__ import annotations

import json
import math
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

from specsweep import results
from specsweep.measure import theory
from specsweep.methods import METHOD_TABLE, method_spec

# A series is the jobs that differ only in k (one line in the k plots): every identity field but k and the two that
# change with it (the config hash and the overrides).
SERIES_FIELDS = tuple(name for name in results.IDENTITY_FIELDS if name not in ("config_hash", "overrides", "k"))
# ... and the engine-specific switches set on the command line (speculation.backend_overrides: an adaptive variant
# such as llama.cpp's p_min is a series of its own, not a second point at the same k)
Series = namedtuple("Series", SERIES_FIELDS + ("variant",), defaults=(None,))
OVERRIDES_PREFIX = "speculation.backend_overrides."


def variant(overrides: Optional[List[str]]) -> Optional[str]:
    """The job's speculation.backend_overrides as its command line set them ("p_min=0.75"), or None."""
    found = [
        o.lstrip("+")[len(OVERRIDES_PREFIX) :] for o in overrides or [] if o.lstrip("+").startswith(OVERRIDES_PREFIX)
    ]
    return ", ".join(sorted(found)) or None


@dataclass
class Job:
    """One job's summary row, plus the per-prompt rows of its result.json (when it is still on disk)."""

    row: Dict[str, Any]
    per_prompt: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"

    def metric(self, name: str) -> Optional[float]:
        value = (self.row.get("metrics") or {}).get(name)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else None

    def energy(self, name: str) -> Optional[float]:
        value = (self.row.get("energy") or {}).get(name)
        return value if isinstance(value, (int, float)) else None

    def stat(self, name: str) -> Dict[str, Any]:
        return (self.row.get("stats") or {}).get(name) or {}

    def theory(self, name: str) -> Any:
        return (self.row.get("theory") or {}).get(name)

    @property
    def k(self) -> Optional[int]:
        return self.row.get("k")

    @property
    def series(self) -> Series:
        """Jobs that differ only in k form one series (one line in the k plots)."""
        return Series(
            **{name: self.row.get(name) for name in SERIES_FIELDS}, variant=variant(self.row.get("overrides"))
        )


def table_paths(paths: List[Path]) -> List[Path]:
    """A sweep dir (or any dir holding results.jsonl, or run dirs whose jobs were killed before writing a row), or a
    results.jsonl file itself."""
    out = []
    for p in paths:
        p = Path(p)
        table = p if p.is_file() else p / results.TABLE_FILE
        if not table.is_file() and not list(p.glob(f"*/{results.RESULT_FILE}")):
            raise FileNotFoundError(f"{p}: no {results.TABLE_FILE} here (pass a sweep dir or a results table)")
        out.append(table)
    return out


def _per_prompt(row: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The per-prompt rows of the row's result.json, only if that file is this job's (same config hash)."""
    try:
        stored = json.loads((Path(row.get("run_dir", "")) / results.RESULT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return (stored.get("per_prompt") or []) if stored.get("config_hash") == row.get("config_hash") else []


def _killed_rows(table: Path, rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Rows for jobs beside this table whose result.json still says `running` and that have no row: killed outright
    (SIGKILL, the OOM killer) before they could record how they ended."""
    from specsweep.results.types import summary_row

    recorded = {str(row.get("run_dir")) for row in rows}
    out = []
    for path in sorted(table.parent.glob(f"*/{results.RESULT_FILE}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("status") == "running" and str(path.parent) not in recorded:
            out.append({**summary_row(data, path.parent), "error": "no end recorded: the process was killed"})
    return out


def compared_row(row: Dict[str, Any], entry: Dict[str, Any]) -> Dict[str, Any]:
    """One of a job's measurement.compare_k values as a row of its own: its metrics and precision, against the job's
    baseline, in the job's series; `compared_in` names the job (its k and run dir)."""
    return {
        **row,
        "config_hash": f"{row.get('config_hash')}#k={entry['k']}",
        "k": entry["k"],
        "metrics": entry.get("metrics") or {},
        "stats": {"paired_speedup": entry.get("paired_speedup")},
        "theory": None,
        "energy": {},
        "compared": [],
        "compared_in": {"k": row.get("k"), "run_dir": row.get("run_dir")},
    }


def load_jobs(paths: List[Path]) -> List[Job]:
    """Every job of the given sweeps (killed ones included); a config run several times keeps its latest row
    (ok preferred)."""
    latest: Dict[str, Dict[str, Any]] = {}
    for table in table_paths(paths):
        rows = list(results.read_table(table))
        for row in rows + _killed_rows(table, rows):
            key = row.get("config_hash") or row.get("run_dir")
            prior = latest.get(key)
            if prior is None or row.get("status") == "ok" or prior.get("status") != "ok":
                latest[key] = row
    jobs = []
    for row in latest.values():
        jobs.append(Job(row, _per_prompt(row)))
        jobs += [Job(compared_row(row, entry)) for entry in row.get("compared") or []]
    return sorted(jobs, key=lambda j: (tuple(str(x) for x in j.series), j.k if j.k is not None else -1))


def _matches_ngrams(method: Any) -> bool:
    return str(method) in METHOD_TABLE and method_spec(method).ngram_sizes


def series_label(series: Series, all_series: List[Series]) -> str:
    """The method (with its n-gram sizes), plus the model, backend and dataset when the series differ in them."""
    label = str(series.method)
    if _matches_ngrams(series.method) and (series.ngram_min or series.ngram_max):
        label += f" n={series.ngram_min or '?'}..{series.ngram_max or '?'}"
    if series.variant:
        label += f" ({series.variant})"
    if series.synthetic_acceptance is not None:
        label += f" (synthetic acceptance {series.synthetic_acceptance:g})"
    if series.k_schedule:
        label += f" (k by batch size {series.k_schedule})"
    if len({s.model for s in all_series}) > 1 or len({s.backend for s in all_series}) > 1:
        label += f" [{series.model}, {series.backend}]"
    if len({s.dataset for s in all_series}) > 1:
        label += f" on {series.dataset}"
    if len({(s.concurrency, s.request_rate) for s in all_series}) > 1 and series.concurrency is not None:
        label += f" @c={series.concurrency}" + (f", {series.request_rate:g} req/s" if series.request_rate else "")
    return label


# --- served jobs: one curve per configuration over concurrency --------------------------------------------------

# What a load curve keeps fixed: every series field but the concurrency, k, and the engine switches (an adaptive
# mode such as llama.cpp's p_min is a curve of its own).
LOAD_FIELDS = tuple(name for name in SERIES_FIELDS if name != "concurrency") + ("k", "variant")


def load_curves(jobs: List[Job]) -> Dict[Tuple, List[Job]]:
    """Ok speculative jobs of served backends, grouped by everything but the concurrency, sorted by concurrency."""
    out: Dict[Tuple, List[Job]] = {}
    for job in jobs:
        if job.ok and job.row.get("method") != "none" and job.row.get("concurrency") is not None:
            key = tuple(job.row.get(name) for name in LOAD_FIELDS[:-1]) + (job.series.variant,)
            out.setdefault(key, []).append(job)
    return {key: sorted(js, key=lambda j: j.row["concurrency"]) for key, js in out.items()}


def curve_label(key: Tuple, all_keys: List[Tuple]) -> str:
    """The method with its k (and n-gram sizes, request rate, and what else differs between the curves)."""
    row = dict(zip(LOAD_FIELDS, key))
    label = f"{row['method']} k={row['k']}"
    if row["k_schedule"]:  # k by batch size (speculation.k_schedule), e.g. from hparams_search=k_by_load
        label = f"{row['method']} schedule {row['k_schedule']}"
    if row["variant"]:  # the engine's own switch (an adaptive mode): a curve of its own
        label += f" ({row['variant']})"
    if _matches_ngrams(row["method"]) and (row["ngram_min"] or row["ngram_max"]):
        label += f" n={row['ngram_min'] or '?'}..{row['ngram_max'] or '?'}"
    if row["request_rate"]:
        label += f", {row['request_rate']:g} req/s"
    for name in ("model", "backend", "dataset"):
        if len({dict(zip(LOAD_FIELDS, k))[name] for k in all_keys}) > 1:
            label += f" [{row[name]}]"
    return label


def crossover(points: List[Tuple[float, Optional[float]]]) -> Dict[str, Any]:
    """Where speculation stops paying as the concurrency grows: the first measured level whose speedup is below 1
    after one at or above 1, with the crossing interpolated linearly in log2(concurrency) between the two.

    -> {"kind": "none" | "crosses" | "never" | "no data", "at": the interpolated concurrency (crosses) or the first
    level (never), "text": one line for the summary}"""
    pts = sorted((c, s) for c, s in points if s is not None)
    if not pts:
        return {"kind": "no data", "at": None, "text": "no measured speedup"}
    lo, hi = pts[0][0], pts[-1][0]
    below = [i for i, (_, s) in enumerate(pts) if s < 1]
    if not below:
        return {"kind": "none", "at": None, "text": f"none in the range (speedup >= 1 at every concurrency {lo}..{hi})"}
    i = below[0]
    if i == 0:
        text = f"speculation never paid in the range (speedup {pts[0][1]:.2f}x already at concurrency {lo})"
        return {"kind": "never", "at": lo, "text": text}
    (c0, s0), (c1, s1) = pts[i - 1], pts[i]
    x0, x1 = math.log2(c0), math.log2(c1)
    at = 2 ** (x0 + (s0 - 1) / (s0 - s1) * (x1 - x0))
    text = f"at concurrency ~{at:.3g}: {s0:.2f}x at {c0}, {s1:.2f}x at {c1} (log-linear interpolation)"
    return {"kind": "crosses", "at": at, "text": text}


def serving(job: Job, phase: str, metric: str, stat: str) -> Optional[float]:
    """A percentile of a served job's phase ("speculative" or "baseline"), e.g. ("speculative", "ttft_s", "p99")."""
    section = ((job.row.get("serving") or {}).get(phase) or {}).get(metric)
    value = section.get(stat) if isinstance(section, dict) else section
    return value if isinstance(value, (int, float)) else None


def by_series(jobs: List[Job]) -> Dict[Series, List[Job]]:
    out: Dict[Series, List[Job]] = {}
    for job in jobs:
        if job.ok and job.row.get("method") != "none":
            out.setdefault(job.series, []).append(job)
    return out


def pooled_theory(jobs: List[Job]) -> Dict[str, Any]:
    """One (alpha, c) per series: alpha and c describe the draft/target pair, not k, so the jobs' estimates are
    pooled (alpha weighted by verification steps, c by median) and the model predicts speedup at every k."""
    alphas = [(j.theory("alpha"), j.metric("num_drafts") or 0) for j in jobs if j.theory("alpha") is not None]
    costs = [j.theory("cost_ratio") for j in jobs if j.theory("cost_ratio") is not None]
    out: Dict[str, Any] = {"alpha": None, "cost_ratio": None, "predicted_best_k": None, "note": ""}
    weight = sum(w for _, w in alphas)
    if alphas and weight:
        out["alpha"] = sum(a * w for a, w in alphas) / weight
    if costs:
        out["cost_ratio"] = median(costs)
    if out["alpha"] is not None and out["cost_ratio"] is not None:
        out["predicted_best_k"], out["predicted_best_speedup"], out["note"] = theory.best_k(
            out["alpha"], out["cost_ratio"]
        )
    measured = [j for j in jobs if j.metric("speedup") is not None and j.k is not None]
    if measured:
        best = max(measured, key=lambda j: j.metric("speedup"))
        out["measured_best_k"], out["measured_best_speedup"] = best.k, best.metric("speedup")
    return out


def cost_curve(jobs: List[Job]) -> Optional[Tuple[int, Dict[int, float]]]:
    """(probe k, k -> speedup) of the series' cost-model curve (theory.curve, measurement.cost_model=true): the
    probe with the largest k, whose curve covers the most k. None where no job of these timed its forwards."""
    probes = [j for j in jobs if j.ok and j.theory("curve")]
    if not probes:
        return None
    curve = max(probes, key=lambda j: j.theory("curve")["probe_k"]).theory("curve")
    return curve["probe_k"], {p["k"]: p["speedup"] for p in curve["points"]}


def break_even(points: List[Tuple[float, float]]) -> Optional[float]:
    """The smallest x at which y (speedup, by acceptance length x) reaches 1.0, interpolated linearly between the
    measured points around the first crossing; None where no pair of neighbours crosses it."""
    points = sorted(points)
    if points and points[0][1] >= 1.0:
        return None  # pays at the lowest acceptance measured: the break-even lies below the range
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if y0 < 1.0 <= y1:
            return x0 + (1.0 - y0) * (x1 - x0) / (y1 - y0)
    return None


def acceptance_map(jobs: List[Job]) -> Dict[str, Any]:
    """Speedup by (measured acceptance length, k) from jobs that verified with a set acceptance
    (speculation.synthetic_acceptance), each k's break-even acceptance length, the best k at each set acceptance,
    and the jobs with real acceptance of the same backend, model and method to place on the map."""
    synthetic = [
        j
        for j in jobs
        if j.ok and j.row.get("synthetic_acceptance") is not None and j.k and j.metric("speedup") is not None
    ]
    by_k: Dict[int, List[Tuple[float, float]]] = {}
    by_alpha: Dict[float, List[Job]] = {}
    for j in synthetic:
        by_k.setdefault(j.k, []).append((j.metric("mean_acceptance_length"), j.metric("speedup")))
        by_alpha.setdefault(j.row["synthetic_acceptance"], []).append(j)
    kinds = {(j.row.get("backend"), j.row.get("model"), j.row.get("method")) for j in synthetic}
    real = [
        j
        for j in jobs
        if j.ok
        and j.row.get("synthetic_acceptance") is None
        and (j.row.get("backend"), j.row.get("model"), j.row.get("method")) in kinds
        and j.k
        and j.metric("speedup") is not None
        and j.metric("mean_acceptance_length") is not None
    ]
    return {
        "by_k": {k: sorted(v) for k, v in sorted(by_k.items())},
        "break_even": {k: break_even(v) for k, v in sorted(by_k.items())},
        "best_k": {alpha: max(js, key=lambda j: j.metric("speedup")) for alpha, js in sorted(by_alpha.items())},
        "real": real,
    }


def category_speedups(job: Job) -> Dict[str, float]:
    """Median per-prompt speedup per prompt category."""
    cats: Dict[str, List[float]] = {}
    for r in job.per_prompt:
        if isinstance(r.get("speedup"), (int, float)):
            cats.setdefault(str(r.get("category")), []).append(r["speedup"])
    return {c: median(v) for c, v in sorted(cats.items())}


def pareto_front(points: List[Tuple[float, float]]) -> List[int]:
    """Indices of the points no other point beats on both axes (both minimised), sorted by the first axis."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


# Jobs of one sweep that share a baseline (same engine, model, prompts and load) should measure it alike: one more
# than this far from the others' median was probably disturbed (precision.DISTURBED is the same bound within a job).
BASELINE_SPREAD = 0.2
BASELINE_FIELDS = ("backend", "model", "dataset", "concurrency", "request_rate")


def outlying_baselines(jobs: List[Job]) -> List[Tuple[Job, float]]:
    """(job, its group's median baseline tokens/s) for each ok job whose baseline throughput is more than
    BASELINE_SPREAD from the median of the jobs sharing its baseline (groups of 3 or more)."""
    groups: Dict[Tuple, List[Job]] = {}
    for j in jobs:
        if j.ok and j.metric("baseline_tokens_per_s"):
            groups.setdefault(tuple(j.row.get(name) for name in BASELINE_FIELDS), []).append(j)
    out = []
    for group in groups.values():
        if len(group) >= 3:
            mid = median(j.metric("baseline_tokens_per_s") for j in group)
            out += [(j, mid) for j in group if abs(j.metric("baseline_tokens_per_s") / mid - 1) > BASELINE_SPREAD]
    return out
