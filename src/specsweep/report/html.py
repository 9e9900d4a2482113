"""Assemble the self-contained HTML report: tables + figures embedded as base64 PNGs (one file, no network)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from specsweep.report import plots
from specsweep.report.data import (
    Job,
    acceptance_map,
    by_series,
    cost_curve,
    crossover,
    curve_label,
    load_curves,
    load_jobs,
    outlying_baselines,
    pooled_theory,
    series_label,
    serving,
)

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.note{color:#555;font-size:13px}.fail{color:#b00}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f5f5f5;padding:0 3px}"""


def _num(v: Any, spec: str = "{:.3g}") -> str:
    return "" if v is None else spec.format(v) if isinstance(v, (int, float)) else html.escape(str(v))


def _interval(stat: Dict[str, Any]) -> str:
    if stat.get("median") is None:
        return ""
    ci = f" [{stat['ci_low']:.3g}, {stat['ci_high']:.3g}]" if stat.get("ci_low") is not None else " (n<3: no interval)"
    return f"{stat['median']:.3g}{ci}"


def _table(header: List[str], rows: List[List[str]], left: int = 1) -> str:
    th = "".join(f"<th{' class=l' if i < left else ''}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=l' if i < left else ''}>{c}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def comparison_table(jobs: List[Job]) -> str:
    groups = by_series(jobs)
    labels = list(groups)
    rows = []
    conf = None
    for series, js in groups.items():
        curve = cost_curve(js)
        for j in js:
            conf = conf or j.stat("speedup").get("confidence")
            e = j.row.get("energy") or {}
            rows.append(
                [
                    html.escape(series_label(series, labels)),
                    _num(j.k)
                    + (f" (in k={j.row['compared_in']['k']}'s round robin)" if j.row.get("compared_in") else ""),
                    _num(j.metric("speedup")),
                    _interval(j.stat("speedup")),
                    _interval(j.stat("tokens_per_s")),
                    _num(j.metric("baseline_tokens_per_s")),
                    _num(j.metric("acceptance_rate")),
                    _num(j.metric("mean_acceptance_length")),
                    _num(j.theory("alpha")),
                    _num(j.theory("cost_ratio")),
                    _num(curve[1].get(j.k) if curve else None),
                    _num(j.theory("predicted_speedup")),
                    _num(e.get("joules_per_token")) + (" (est.)" if e.get("estimated") else ""),
                    _num(e.get("energy_ratio")),
                    _num(j.metric("num_drafts"), "{:.0f}"),
                ]
            )
    header = [
        "method",
        "k",
        "speedup",
        f"per-prompt speedup median [{int((conf or 0.95) * 100)}% CI]",
        "tok/s median [CI]",
        "baseline tok/s",
        "acceptance rate",
        "mean accept. length",
        "alpha (fit)",
        "c",
        "cost-model prediction",
        "i.i.d. prediction",
        "J/token",
        "energy ratio",
        "draft steps",
    ]
    return _table(header, rows)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def curve_table(jobs: List[Job]) -> str:
    """How far each model was from every measured k of a probe's series: the cost-model curve and the i.i.d. one."""
    labels = list(by_series(jobs))
    rows = []
    for probe in (j for j in jobs if j.ok and j.theory("curve")):
        points = {p["k"]: p for p in probe.theory("curve")["points"]}
        for j in (j for j in jobs if j.ok and j.series == probe.series and j.k in points):
            measured, p = j.metric("speedup"), points[j.k]
            iid = p.get("iid_speedup")
            rows.append(
                [
                    html.escape(series_label(j.series, labels)),
                    _num(j.k),
                    _num(measured),
                    _num(p["speedup"]),
                    _pct(p["speedup"] / measured - 1 if measured else None),
                    _num(iid),
                    _pct(iid / measured - 1 if measured and iid is not None else None),
                ]
            )
    header = ["method", "k", "measured", "cost model", "its error", "i.i.d. model", "its error"]
    return _table(header, rows) if rows else ""


def acceptance_map_table(jobs: List[Job]) -> str:
    """Under the acceptance map: each k's break-even acceptance length, and the best k at each set acceptance."""
    found = acceptance_map(jobs)
    if not found["by_k"]:
        return ""
    rows = []
    for k, points in found["by_k"].items():
        lengths = [x for x, _ in points if x is not None]
        even = found["break_even"][k]
        note = (
            _num(even)
            if even is not None
            else ("below the range: pays at every acceptance measured" if min(y for _, y in points) >= 1.0 else "")
            or "not reached in the range"
        )
        span = f"{min(lengths):.3g} to {max(lengths):.3g}" if lengths else ""
        rows.append([_num(k), note, span, ", ".join(f"{y:.3g}" for _, y in points)])
    by_k = _table(["k", "break-even acceptance length (1.0x)", "acceptance lengths measured", "speedups"], rows)
    best = [
        [_num(alpha), _num(j.k), _num(j.metric("speedup")), _num(j.metric("mean_acceptance_length"))]
        for alpha, j in found["best_k"].items()
    ]
    header = ["set acceptance per token", "best k", "its speedup", "its acceptance length"]
    return by_k + _table(header, best) + ACCEPTANCE_MAP_NOTE


def theory_table(jobs: List[Job]) -> str:
    groups = by_series(jobs)
    labels = list(groups)
    rows = []
    for series, js in groups.items():
        p = pooled_theory(js)
        best = _num(p["predicted_best_k"]) if p["predicted_best_k"] is not None else "none"
        rows.append(
            [
                html.escape(series_label(series, labels)),
                _num(p["alpha"]),
                _num(p["cost_ratio"]),
                best,
                _num(p.get("predicted_best_speedup")),
                _num(p.get("measured_best_k")),
                _num(p.get("measured_best_speedup")),
                ", ".join(sorted(str(j.k) for j in js)),
                html.escape(p["note"]),
            ]
        )
    header = [
        "method",
        "pooled alpha",
        "c",
        "i.i.d. best k",
        "i.i.d. speedup there",
        "sweep's best k",
        "measured speedup there",
        "k values swept",
        "note",
    ]
    return _table(header, rows)


def failures(jobs: List[Job]) -> str:
    failed = [j for j in jobs if not j.ok]
    if not failed:
        return ""
    rows = [
        [
            html.escape(str(j.row.get("method"))),
            _num(j.k),
            html.escape(str(j.row.get("status"))),
            f"<span class=fail>{html.escape(str(j.row.get('error')))}</span>",
            html.escape(str(j.row.get("run_dir"))),
        ]
        for j in failed
    ]
    title = "<h2>Jobs that did not end ok (failed, interrupted, or killed while running)</h2>"
    return title + _table(["method", "k", "status", "error", "run dir"], rows, left=5)


def disturbed(jobs: List[Job]) -> str:
    """Jobs whose figures look disturbed: a side whose throughput varied between rounds (the job's own warning), or a
    baseline far from the other jobs sharing it. Their speedups are listed in the tables, flagged here."""
    outliers = {id(j): mid for j, mid in outlying_baselines(jobs)}
    warned = [j for j in jobs if j.ok and (id(j) in outliers or (j.stat("paired_speedup") or {}).get("warnings"))]
    if not warned:
        return ""
    rows = []
    for j in warned:
        why = list(j.stat("paired_speedup").get("warnings") or [])
        if id(j) in outliers:
            why.append(
                f"baseline {j.metric('baseline_tokens_per_s'):.3g} tok/s where the jobs sharing it measured a median "
                f"of {outliers[id(j)]:.3g}"
            )
        row = [html.escape(str(j.row.get("method"))), _num(j.k), _num(j.metric("speedup"))]
        rows.append(
            row + [f"<span class=fail>{html.escape('; '.join(why))}</span>", html.escape(str(j.row.get("run_dir")))]
        )
    title = "<h2>Jobs that look disturbed (measure them again on an idle machine)</h2>"
    return title + _table(["method", "k", "speedup", "why", "run dir"], rows, left=3)


def _served_row(label: str, j: Job) -> List[str]:
    goodput = ((j.row.get("serving") or {}).get("speculative") or {}).get("goodput_fraction")
    latencies = [("ttft_s", "p50"), ("ttft_s", "p99"), ("itl_s", "p50")]
    return [
        html.escape(label),
        _num(j.row.get("concurrency")),
        _num(j.row.get("request_rate")) or "max",
        _num(j.metric("speedup")),
        _num(j.metric("tokens_per_s")),
        _num(j.metric("baseline_tokens_per_s")),
        *[_num(serving(j, phase, m, p)) for m, p in latencies for phase in ("speculative", "baseline")],
        _num(goodput) or "no limit set",
        _num(j.metric("acceptance_rate")) or "n/a",
    ]


def served_section(jobs: List[Job]) -> str:
    """Served jobs: where speculation stops paying per configuration (the summary), and the numbers per load."""
    curves = load_curves(jobs)
    if not curves:
        return ""
    keys = list(curves)
    items, rows = [], []
    for key, js in curves.items():
        label = curve_label(key, keys)
        cross = crossover([(j.row["concurrency"], j.metric("speedup")) for j in js])
        items.append(f"<li>{html.escape(label)}: stops paying: {html.escape(cross['text'])}</li>")
        rows += [_served_row(label, j) for j in js]
    header = [
        "configuration",
        "concurrency",
        "req/s",
        "speedup",
        "tok/s",
        "baseline tok/s",
        "TTFT p50",
        "baseline TTFT p50",
        "TTFT p99",
        "baseline TTFT p99",
        "ITL p50",
        "baseline ITL p50",
        "goodput share",
        "acceptance rate",
    ]
    return (
        "<h2>Served: where speculation stops paying</h2><ul>"
        + "".join(items)
        + "</ul>"
        + SERVED_NOTE
        + _table(header, rows)
    )


SERVED_NOTE = (
    "<p class=note>Each served job is one (configuration, concurrency) pair, paired with the same server without "
    "speculation under the same load. speedup = output tokens/s ratio. TTFT, ITL in seconds; ITL = gaps between "
    "streamed chunks. 'stops paying' is the first concurrency whose speedup is below 1 after one at or above 1, "
    "interpolated in log2(concurrency). acceptance n/a: the server exposes no counters (mlx_lm.server).</p>"
)


def _k(k: Any) -> str:
    return "n/a" if k is None else ("off" if k == 0 else str(k))


def k_by_load_section(sources: List[Path]) -> str:
    """The k-by-load search of each source that holds one (<sweep dir>/k_by_load.json): a row per level."""
    from specsweep.load_tuning import SUMMARY_FILE

    out = []
    for path in [Path(s) / SUMMARY_FILE for s in sources if (Path(s) / SUMMARY_FILE).is_file()]:
        found = json.loads(path.read_text())
        rows = []
        for level in found["levels"]:
            runner, check = level.get("runner_up") or {}, level.get("schedule_check") or {}
            held = {True: "held", False: "missed", None: ""}[check.get("held")]
            rows.append(
                [
                    _num(level["concurrency"]),
                    _k(level["best_k"]),
                    _num(level["best_speedup"]),
                    f"{_k(runner.get('k'))} ({_num(runner.get('speedup'))})" if runner else "n/a",
                    f"{_num(check.get('speedup'))} {held}: {html.escape(check.get('how', ''))}" if check else "not run",
                    html.escape(", ".join(f"{n} {_num(v)}" for n, v in level.get("adaptive", {}).items())) or "none",
                ]
            )
        header = ["concurrency", "best k", "speedup", "runner-up", "schedule there", "engine's adaptive"]
        engines = "; ".join(f"{e}: {json.dumps(v)}" for e, v in found["engine_schedules"].items()) or "none"
        out.append(
            f"<h2>k by load ({html.escape(found['backend'])} {html.escape(found['method'])})</h2>"
            + _table(header, rows)
            + f"<p class=note>Schedule (from batch size: k): {html.escape(json.dumps(found['schedule']))}; engines: "
            + f"{html.escape(engines)}. {html.escape(found['note'])} Search: {found['search_runs']} measured runs, "
            + f"{found['search_s']:.0f} s measuring.</p>"
        )
    return "".join(out)


def render(sources: List[Path]) -> Tuple[str, Dict[str, bytes]]:
    """The report's HTML and its figures as PNG bytes (by name)."""
    jobs = load_jobs(sources)
    if not jobs:
        raise ValueError("no results in " + ", ".join(map(str, sources)))
    pngs: Dict[str, bytes] = {}
    sections = []
    for name, (title, make) in plots.FIGURES.items():
        fig = make(jobs)
        if isinstance(fig, str):
            sections.append(f"<h2>{html.escape(title)}</h2><p class=note>Not drawn: {html.escape(fig)}.</p>")
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plots._plt().close(fig)
        pngs[name] = buf.getvalue()
        img = base64.b64encode(pngs[name]).decode()
        extra = {
            "predicted_vs_measured": theory_table(jobs) + THEORY_NOTE,
            "predicted_curve": curve_table(jobs),
            "acceptance_map": acceptance_map_table(jobs),
        }.get(name, "")
        sections.append(f"<h2>{html.escape(title)}</h2><img alt='{name}' src='data:image/png;base64,{img}'>{extra}")
    ok = [j for j in jobs if j.ok]
    head = (
        f"<h1>specsweep comparison report</h1><p class=note>{len(jobs)} jobs ({len(ok)} ok) from "
        + ", ".join(f"<code>{html.escape(str(s))}</code>" for s in sources)
        + f"; generated {dt.datetime.now().isoformat(timespec='seconds')}. Models: "
        + html.escape(", ".join(sorted({str(j.row.get("model")) for j in jobs})))
        + ". Backends: "
        + html.escape(", ".join(sorted({str(j.row.get("backend")) for j in jobs})))
        + ".</p>"
    )
    body = (
        head
        + served_section(jobs)
        + k_by_load_section(sources)
        + "<h2>Comparison per method and k</h2>"
        + TABLE_NOTE
        + comparison_table(jobs)
        + "".join(sections)
        + disturbed(jobs)
        + failures(jobs)
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>specsweep report</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>",
        pngs,
    )


TABLE_NOTE = (
    "<p class=note>speedup = tokens/s with speculation / tokens/s of the no-speculation baseline over all prompts; the "
    "interval is a bootstrap interval of the per-prompt median. acceptance rate = accepted / drafted tokens. "
    "alpha (fit) and c feed the i.i.d. prediction (see Theory vs. measurement), which assumes a verification step "
    "costs one target step: with c = 0 (prompt lookup) it over-predicts. The cost-model prediction comes from "
    "timed target and draft forwards and the probe's own acceptance (measurement.cost_model=true, e.g. "
    "hparams_search=best_k); n/a where no job of the series timed them. Both are predictions, not measurements. "
    "J/token marked (est.) is an estimate, not a meter reading.</p>"
)
ACCEPTANCE_MAP_NOTE = (
    "<p class=note>Each point verified its drafts with a set acceptance (speculation.synthetic_acceptance: vLLM's "
    "rejection_sample_method=synthetic, each drafted token accepted with that probability) while the proposer and "
    "the target ran for real, so its speedup is what a draft of this cost would give at that acceptance on this "
    "machine. Acceptance length is measured (accepted tokens per step + 1). Break-even: interpolated linearly between "
    "the two measured points around 1.0x. Outputs of these jobs are not the target's; real drafts are marked as "
    "stars.</p>"
)
THEORY_NOTE = (
    "<p class=note>Predictions use Leviathan et al. (2023): speedup = (1 - alpha^(k+1)) / ((1 - alpha)(k c + 1)), "
    "with alpha fitted to each job's measured mean acceptance length (i.i.d. model) and c = draft TPOT / target TPOT "
    "measured in the run (c = 0 for ngram: its proposer is a table lookup). The model assumes verifying k+1 tokens "
    "costs one target step; where measured speedup falls below the prediction, that assumption (or proposer overhead "
    "the model ignores) is what the gap measures. Pooled alpha: the jobs' alphas weighted by draft steps; c: their "
    "median. 'none' = the model has no optimum within k &le; 64.</p>"
)


def write(sources: List[Path], out: Path, png_dir: Optional[Path] = None) -> Path:
    text, pngs = render(sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            (png_dir / f"{name}.png").write_bytes(data)
    return out
