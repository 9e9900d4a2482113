"""Local HTML report and the W&B Report builder, on hand-made sweep tables (test inputs, not measurements)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from specsweep import results
from specsweep.measure import theory
from specsweep.report import data, html
from specsweep.results.types import ComparedK, Energy, Metrics, Precision, PromptRow, Result, Spread, Stats


def make_job(
    sweep: Path,
    num: int,
    method: str,
    k: int,
    speedup: float,
    alpha: float,
    c: float,
    joules=None,
    status="ok",
    categories=(("code", 1.2), ("chat", 0.8)),
    curve=None,
    baseline=10.0,
    warnings=(),
    overrides=(),
    synthetic=None,
    compared=(),
):
    run_dir = sweep / str(num)
    run_dir.mkdir(parents=True)
    drafts = 10
    accepted = round(drafts * sum(alpha**i for i in range(1, k + 1)))
    metrics = Metrics(
        tokens_per_s=baseline * speedup,
        baseline_tokens_per_s=baseline,
        speedup=speedup,
        acceptance_rate=accepted / (drafts * k),
        mean_acceptance_length=1 + accepted / drafts,
        acceptance_per_position=[alpha**i for i in range(1, k + 1)],
        acceptance_per_position_conditional=[alpha] * k,
        drafted_tokens=drafts * k,
        accepted_tokens=accepted,
        num_drafts=drafts,
        tpot_s=0.1,
    )
    sec = theory.section(method, k, metrics, {"cost_ratio": c, "cost_ratio_source": "test"})
    if curve is not None:
        sec.curve = curve
    per_prompt = [PromptRow(id=f"{cat}-1", category=cat, speedup=speedup * f) for cat, f in categories]
    energy = Energy(
        joules=joules,
        joules_per_token=joules and joules / 100,
        energy_ratio=0.9 if joules else None,
        unavailable_reason=None if joules else "energy measurement is off (energy=none)",
    )
    spread = Spread(n=3, median=speedup, ci_low=speedup * 0.9, ci_high=speedup * 1.1, confidence=0.95)
    ok = status == "ok"
    result = Result(
        status=status,
        error=None if ok else "RuntimeError: boom",
        config_hash=f"h{num}",
        backend="pytorch",
        method=method,
        k=k,
        ngram_min=None,
        ngram_max=None,
        synthetic_acceptance=synthetic,
        model="m",
        dataset="builtin",
        overrides=list(overrides),
        started_at="2026-01-01T00:00:00+00:00",
        config={},
        metrics=metrics if ok else None,
        energy=energy,
        stats=Stats(
            tokens_per_s=Spread(n=0),
            ttft_s=Spread(n=0),
            tpot_s=Spread(n=0),
            speedup=spread,
            paired_speedup=Precision(rounds=2, round_speedups=[speedup] * 2, confidence=0.95, warnings=list(warnings)),
        ),
        theory=sec if ok else None,
        per_prompt=per_prompt if ok else None,
        compared=list(compared),
    )
    results.write_result(run_dir, result.to_dict())
    results.append_row(sweep / results.TABLE_FILE, result.summary_row(run_dir))


def series(method: str) -> data.Series:
    return data.Series(
        backend="pytorch",
        method=method,
        ngram_min=None,
        ngram_max=None,
        synthetic_acceptance=None,
        k_schedule=None,
        concurrency=None,
        request_rate=None,
        model="m",
        dataset="builtin",
    )


@pytest.fixture
def sweep(tmp_path) -> Path:
    s = tmp_path / "2026-01-01_00-00-00"
    n = 0
    for method, c, speedups in (("draft_model", 0.3, (1.3, 1.5, 1.4)), ("ngram", 0.0, (1.1, 1.2, 1.15))):
        for k, sp in zip((2, 4, 6), speedups):
            make_job(s, n, method, k, sp, 0.7 if method == "draft_model" else 0.4, c, joules=50.0 / sp)
            n += 1
    make_job(s, n, "ngram", 8, 1.0, 0.4, 0.0, status="failed")
    return s


def test_acceptance_per_position_draws_both_ways_per_job(sweep):
    from specsweep.report import plots

    fig = plots.acceptance_per_position(data.load_jobs([sweep]))
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    solid = [line.get_ydata().tolist() for line in lines if line.get_linestyle() == "-"]
    dashed = [line.get_ydata().tolist() for line in lines if line.get_linestyle() == "--"]
    assert len(solid) == len(dashed) == 6  # one of each per job with counts (the failed job has none)
    assert [0.7, 0.7] in dashed and [0.7, pytest.approx(0.49)] in solid  # conditional vs per draft step, k=2


def test_an_adaptive_variant_at_the_same_k_is_a_series_of_its_own(tmp_path):
    s = tmp_path / "s"
    make_job(s, 0, "draft_model", 8, 0.42, 0.6, 0.5)
    make_job(s, 1, "draft_model", 8, 0.53, 0.6, 0.5, overrides=["++speculation.backend_overrides.p_min=0.75", "x=1"])
    groups = data.by_series(data.load_jobs([s]))
    assert sorted(data.series_label(g, list(groups)) for g in groups) == ["draft_model", "draft_model (p_min=0.75)"]
    text, _ = html.render([s])
    assert "draft_model (p_min=0.75)" in text


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 1.0), (2.0, 3.0), (5.0, 5.0)]
    assert data.pareto_front(pts) == [0, 1, 4, 3]  # (3,4) is beaten by (2,3); (5,5) by everything
    assert data.pareto_front([(1.0, 1.0)]) == [0]


def test_pooled_theory_and_best_k(sweep):
    jobs = data.load_jobs([sweep])
    groups = data.by_series(jobs)
    dm = groups[series("draft_model")]
    pooled = data.pooled_theory(dm)
    assert pooled["cost_ratio"] == 0.3
    assert pooled["alpha"] == pytest.approx(sum(j.theory("alpha") for j in dm) / 3)  # equal weights: 10 drafts each
    assert pooled["predicted_best_k"] == theory.best_k(pooled["alpha"], 0.3)[0]
    assert (pooled["measured_best_k"], pooled["measured_best_speedup"]) == (4, 1.5)
    ng = data.pooled_theory(groups[series("ngram")])
    assert ng["predicted_best_k"] is None and "c=0" in ng["note"]
    assert data.category_speedups(dm[0]) == {"chat": pytest.approx(1.3 * 0.8), "code": pytest.approx(1.3 * 1.2)}


def test_series_are_identity_minus_k_and_labels_name_every_ngram_window():
    assert data.SERIES_FIELDS == (
        "backend",
        "method",
        "ngram_min",
        "ngram_max",
        "synthetic_acceptance",
        "k_schedule",
        "concurrency",
        "request_rate",
        "model",
        "dataset",
    )
    gpu = series("ngram_gpu")._replace(ngram_min=2, ngram_max=4)
    cpu = series("ngram")._replace(ngram_min=1, ngram_max=3)
    other = series("draft_model")._replace(model="other", dataset="sharegpt")
    assert data.series_label(gpu, [gpu, cpu]) == "ngram_gpu n=2..4"
    assert data.series_label(cpu, [gpu, cpu]) == "ngram n=1..3"
    assert data.series_label(series("draft_model")._replace(ngram_min=2), [gpu]) == "draft_model"  # no window
    assert data.series_label(other, [gpu, other]) == "draft_model [other, pytorch] on sharegpt"


def test_html_report_is_self_contained_with_every_figure(sweep, tmp_path):
    text, pngs = html.render([sweep])
    assert set(pngs) == {
        "speedup_vs_k",
        "predicted_vs_measured",
        "joules_per_token_vs_k",
        "acceptance_per_position",
        "speedup_by_category",
        "latency_energy_pareto",
    }
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 6 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert "http" not in text.replace("https://", "").split("<body>")[0]  # nothing fetched
    assert "i.i.d. best k" in text and "sweep&#x27;s best k" in text  # both columns of the theory table
    assert "RuntimeError: boom" in text  # the failed job is listed with its error
    assert "[1.35, 1.65]" in text  # draft_model k=4: per-prompt median 1.5 with its interval


def test_a_job_whose_baseline_stands_out_or_that_warned_is_flagged_disturbed(tmp_path):
    """The issue's sweep: k=5's baseline at 2.13 tok/s where its neighbours measured 4.3-4.9 (a shared machine)."""
    s = tmp_path / "s"
    for n, (k, base) in enumerate([(3, 4.3), (4, 4.9), (5, 2.13), (6, 4.6)]):
        make_job(s, n, "ngram", k, 1.3, 0.4, 0.0, baseline=base)
    make_job(s, 4, "draft_model", 2, 1.2, 0.6, 0.2, baseline=4.5, warnings=["the baseline side's throughput varied"])
    text, _ = html.render([s])
    section = text.split("Jobs that look disturbed")[1]
    assert "baseline 2.13 tok/s where the jobs sharing it measured a median of 4.5" in section
    assert "the baseline side&#x27;s throughput varied" in section
    assert section.count("<tr>") == 3  # header, k=5, the job that warned: its neighbours are not flagged
    calm = tmp_path / "calm"
    for n, k in enumerate((3, 4, 5)):
        make_job(calm, n, "ngram", k, 1.3, 0.4, 0.0, baseline=4.5)
    assert "Jobs that look disturbed" not in html.render([calm])[0]


def test_report_says_why_a_figure_is_missing(tmp_path):
    s = tmp_path / "s"
    make_job(s, 0, "draft_model", 3, 1.2, 0.6, 0.25)
    text, pngs = html.render([s])
    assert (
        "joules_per_token_vs_k" not in pngs
        and "energy was not measured in these jobs: energy measurement is off" in text
    )
    assert "latency_energy_pareto" not in pngs and "speedup_vs_k" in pngs


@pytest.mark.slow
def test_report_cli_writes_html_and_pngs(sweep, tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "report.py"),
            str(sweep),
            "--out",
            str(out),
            "--png-dir",
            str(tmp_path / "png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and len(list((tmp_path / "png").glob("*.png"))) == 6
    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "report.py"), str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no results.jsonl here" in bad.stderr


def test_wandb_report_structure_offline(sweep):
    from specsweep.report.wandb_report import build_report

    report = build_report("proj", "me", sweep.name, ["chat", "code"], max_k=6)
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert len(grids) == 2
    for grid in grids:
        (rs,) = grid.runsets
        assert rs.project == "proj" and rs.entity == "me" and sweep.name in rs.filters and "Group" in rs.filters
    titles = [p.title for g in grids for p in g.panels]
    assert any("Speedup vs k" in t for t in titles) and any("Predicted" in t for t in titles)
    metrics = {m.name for g in grids for p in g.panels for m in (getattr(p, "metrics", None) or [])}
    metrics |= {
        getattr(p, a).name for g in grids for p in g.panels for a in ("x", "y") if getattr(p, a, None) is not None
    }
    # the names the tracker logs (see test_tracking) so the panels find data
    assert {
        "metrics/speedup",
        "energy/joules_per_token",
        "theory/predicted_speedup",
        "acceptance_position/6",
        "category/code/speedup",
        "category/chat/acceptance_rate",
        "k",
    } <= metrics
    assert grids[1].runsets[0].groupby == ["config.method"]


@pytest.mark.slow
def test_wandb_report_cli_dry_run_and_no_login(sweep, tmp_path):
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    script = str(REPO / "scripts" / "wandb_report.py")
    dry = subprocess.run(
        [sys.executable, script, str(sweep), "--dry-run"], capture_output=True, text=True, env=env, timeout=120
    )
    assert dry.returncode == 0, dry.stderr
    assert f"group {sweep.name}" in dry.stdout and "ScatterPlot" in dry.stdout
    publish = subprocess.run([sys.executable, script, str(sweep)], capture_output=True, text=True, env=env, timeout=120)
    assert publish.returncode == 2 and "wandb login" in publish.stderr


LONG = ("multi-turn customer support chat", "code completion (python)", "summarization of news articles")


def test_category_panel_fits_every_bar_and_its_long_labels_do_not_overlap(tmp_path):
    from specsweep.report import plots

    sweep = tmp_path / "s"
    for n, (k, sp) in enumerate(((2, 2.9), (4, 3.4), (6, 3.1))):
        make_job(sweep, n, "draft_model", k, sp, 0.9, 0.1, categories=[(c, 1.0 + 0.1 * i) for i, c in enumerate(LONG)])
    fig = plots.speedup_by_category(data.load_jobs([sweep]))
    fig.canvas.draw()
    (ax,) = fig.axes
    tallest = max(bar.get_height() for bar in ax.patches)
    assert tallest > 3.5 and ax.get_ylim()[1] > tallest  # nothing clipped above 2.5x (or anywhere)
    renderer = fig.canvas.get_renderer()
    boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels()]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(legend.overlaps(bar.get_window_extent(renderer)) for bar in ax.patches)


def probe_curve(points, draft_token_s: float):
    """A k=4 probe's theory.curve through the given points (its timings are placeholders the report does not read)."""
    from specsweep.results.types import CostCurve

    best = max(points, key=lambda p: p.speedup)
    return CostCurve(
        probe_k=4,
        verify_s=[0.1] * 5,
        draft_token_s=draft_token_s,
        draft_step_share=1.0,
        points=points,
        best_k=best.k,
        best_speedup=best.speedup,
        best_energy_k=None,
        source="test",
        tokens_source="test",
    )


def test_the_curve_panel_and_table_compare_both_models_with_every_measured_k(tmp_path):
    from specsweep.report import plots
    from specsweep.results.types import CurvePoint

    points = [
        CurvePoint(k=k, tokens_per_step=1 + 0.5 * k, speedup=1 + 0.1 * k, iid_speedup=1 + 0.3 * k) for k in (1, 2, 3, 4)
    ]
    curve = probe_curve(points, draft_token_s=0.01)
    sweep = tmp_path / "s"
    make_job(sweep, 0, "draft_model", 4, 1.4, 0.7, 0.1, curve=curve)
    make_job(sweep, 1, "draft_model", 2, 1.25, 0.7, 0.1)
    jobs = data.load_jobs([sweep])
    assert plots.predicted_curve(jobs) is not None and not isinstance(plots.predicted_curve(jobs), str)
    table = html.curve_table(jobs)
    assert "+0.0%" in table  # k=4: the probe itself, where the cost model is exact by construction here
    assert "-4.0%" in table and "+28.0%" in table  # k=2: cost model 1.2 vs 1.25 measured; i.i.d. 1.6


def test_the_main_speedup_panel_and_table_show_the_cost_model_where_it_was_timed_and_label_the_iid_one(tmp_path):
    """A plain sweep's only prediction used to be the i.i.d. model with c = 0, drawn as 'predicted': where a job of
    the series has the cost model's curve, the panel draws it and the table gives its value at each swept k."""
    from specsweep.report import plots
    from specsweep.results.types import CurvePoint

    points = [CurvePoint(k=k, tokens_per_step=1.5, speedup=1 + 0.05 * k, iid_speedup=2.0) for k in (1, 2, 3, 4)]
    curve = probe_curve(points, draft_token_s=0.0)
    sweep = tmp_path / "s"
    make_job(sweep, 0, "ngram", 4, 1.2, 0.4, 0.0, curve=curve)
    make_job(sweep, 1, "ngram", 2, 1.15, 0.4, 0.0)
    make_job(sweep, 2, "draft_model", 2, 1.3, 0.7, 0.3)  # a series without timed forwards: no cost-model value
    jobs = data.load_jobs([sweep])
    legend = [t.get_text() for t in plots.speedup_vs_k(jobs).axes[0].get_legend().get_texts()]
    assert sum("cost model (probe k=4)" in t for t in legend) == 1  # ngram's only
    assert sum("i.i.d. model" in t for t in legend) == 2 and not any(t.endswith(": predicted") for t in legend)
    rows = re.findall(r"<tr>(.*?)</tr>", html.comparison_table(jobs))
    cells = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r) for r in rows]
    header, body = cells[0], {(c[0], c[1]): c for c in cells[1:]}
    cost, iid = header.index("cost-model prediction"), header.index("i.i.d. prediction")
    assert body[("ngram", "2")][cost] == "1.1" and body[("ngram", "4")][cost] == "1.2"
    assert body[("draft_model", "2")][cost] == "" and body[("draft_model", "2")][iid] != ""


def test_the_acceptance_map_finds_each_ks_break_even_and_the_best_k_at_each_acceptance(tmp_path):
    """Jobs that verified with a set acceptance: speedup by (measured acceptance length, k). make_job's acceptance
    length at alpha and k is 1 + round(10 * sum alpha^i) / 10, so the break-even follows from the planted speedups."""
    from specsweep.report import plots

    sweep = tmp_path / "s"
    planted = {(1, 0.3): 0.8, (1, 0.9): 1.1, (2, 0.3): 0.7, (2, 0.9): 1.3, (4, 0.3): 0.5, (4, 0.9): 1.2}
    for n, ((k, alpha), speedup) in enumerate(planted.items()):
        make_job(sweep, n, "draft_model", k, speedup, alpha, 0.3, synthetic=alpha)
    make_job(sweep, 6, "draft_model", 2, 0.9, 0.6, 0.3)  # the real draft, to be placed on the map
    jobs = data.load_jobs([sweep])
    found = data.acceptance_map(jobs)
    lengths = {k: [x for x, _ in found["by_k"][k]] for k in (1, 2, 4)}
    assert lengths == {1: [1.3, 1.9], 2: [1.4, 2.7], 4: [1.4, 4.1]}  # 1 + round(10 sum alpha^i) / 10
    assert found["break_even"][1] == pytest.approx(1.3 + 0.2 / 0.3 * 0.6)
    assert found["break_even"][2] == pytest.approx(1.4 + 0.3 / 0.6 * 1.3)
    assert found["break_even"][4] == pytest.approx(1.4 + 0.5 / 0.7 * 2.7)
    assert {a: j.k for a, j in found["best_k"].items()} == {0.3: 1, 0.9: 2}
    assert [j.k for j in found["real"]] == [2]  # the real job, not a synthetic one
    assert all(j.row["synthetic_acceptance"] is None for j in found["real"])
    fig = plots.acceptance_map(jobs)
    assert not isinstance(fig, str) and fig.axes[0].collections  # the coloured points (and the 1.0x contour)
    table = html.acceptance_map_table(jobs)
    assert "break-even" in table and f"{found['break_even'][2]:.3g}" in table
    series = {j.series for j in jobs if j.k == 2}
    assert len(series) == 3  # each set acceptance and the real draft are series of their own, never one line
    labels = sorted(data.series_label(s, list(series)) for s in series)
    assert labels == ["draft_model", "draft_model (synthetic acceptance 0.3)", "draft_model (synthetic acceptance 0.9)"]


def test_break_even_is_none_outside_the_range_and_the_first_crossing_inside_it():
    assert data.break_even([(1.5, 1.1), (2.0, 1.3)]) is None  # pays at the lowest acceptance measured
    assert data.break_even([(1.5, 0.6), (2.0, 0.9)]) is None  # never pays in the range
    assert data.break_even([(3.0, 1.2), (1.5, 0.5), (2.0, 1.0)]) == pytest.approx(2.0)  # unsorted input, exact hit
    assert data.break_even([(1.0, 0.8), (2.0, 1.2), (3.0, 0.9)]) == pytest.approx(1.5)  # interpolated, first crossing


def test_a_schedules_load_curve_is_labelled_by_its_schedule_beside_each_fixed_k():
    key = {name: None for name in data.LOAD_FIELDS}
    key.update(method="ngram", backend="vllm_server", model="m", dataset="builtin")
    fixed = tuple({**key, "k": 3}[n] for n in data.LOAD_FIELDS)
    scheduled = tuple({**key, "k": 3, "k_schedule": "1:3,2:2,4:0"}[n] for n in data.LOAD_FIELDS)
    assert data.curve_label(fixed, [fixed, scheduled]) == "ngram k=3"
    assert data.curve_label(scheduled, [fixed, scheduled]) == "ngram schedule 1:3,2:2,4:0"
    adaptive = tuple({**key, "k": 3, "variant": "p_min=0.75"}[n] for n in data.LOAD_FIELDS)
    assert data.curve_label(adaptive, [fixed, adaptive]) == "ngram k=3 (p_min=0.75)"


def test_an_adaptive_mode_is_a_load_curve_of_its_own_not_a_second_point_at_its_k():
    def job(c, overrides=()):
        row = {"status": "ok", "method": "draft_model", "k": 4, "concurrency": c, "overrides": list(overrides)}
        return data.Job({**row, "backend": "llamacpp_server", "model": "m", "dataset": "builtin"})

    p_min = ["++speculation.backend_overrides.p_min=0.75"]
    curves = data.load_curves([job(1), job(2), job(1, p_min), job(2, p_min)])
    assert sorted(len(js) for js in curves.values()) == [2, 2] and len(curves) == 2


def test_a_sweeps_k_by_load_summary_is_a_table_per_level(sweep):
    from dataclasses import asdict

    from specsweep import load_tuning
    from specsweep.report import html as report_html

    summary = load_tuning.LoadSummary(backend="vllm_server", method="ngram", probe_k=4, schedule={1: 3, 4: 0})
    summary.levels = [
        load_tuning.Level(1, best_k=3, best_speedup=1.5, runner_up={"k": 2, "speedup": 1.4}, adaptive={"p_min": 1.2}),
        load_tuning.Level(4, best_k=0, best_speedup=1.0, runner_up={"k": 1, "speedup": 0.9}),
    ]
    summary.levels[0].schedule_check = {"speedup": 1.48, "held": True, "how": "0.987 of the best"}
    summary.engine_schedules = load_tuning.engine_schedules(summary.schedule)
    (sweep / load_tuning.SUMMARY_FILE).write_text(json.dumps(asdict(summary)))
    page, _ = report_html.render([sweep])
    assert "k by load (vllm_server ngram)" in page and "num_speculative_tokens_per_batch_size" in page
    assert (
        "<td class=l>1</td><td>3</td><td>1.5</td><td>2 (1.4)</td>"
        "<td>1.48 held: 0.987 of the best</td><td>p_min 1.2</td>" in page
    )
    assert "<td class=l>4</td><td>off</td><td>1</td><td>1 (0.9)</td><td>not run</td><td>none</td>" in page


def test_a_jobs_compared_k_values_are_points_of_its_series_marked_with_the_job_that_measured_them(tmp_path):
    s = tmp_path / "s"
    precision = Precision(rounds=3, round_speedups=[0.9, 0.92, 0.94], mean=0.92, confidence=0.95)
    compared = [
        ComparedK(k=k, metrics=Metrics(speedup=sp, baseline_tokens_per_s=10.0), paired_speedup=precision)
        for k, sp in ((2, 0.92), (4, 0.71))
    ]
    make_job(s, 0, "draft_model", 8, 0.5, 0.6, 0.5, compared=compared)
    jobs = data.load_jobs([s])
    assert [(j.k, j.metric("speedup")) for j in jobs] == [(2, 0.92), (4, 0.71), (8, 0.5)]
    assert len(data.by_series(jobs)) == 1 and jobs[0].stat("paired_speedup")["mean"] == 0.92
    text, _ = html.render([s])
    assert "<td>2 (in k=8's round robin)</td>" in text and "<td>4 (in k=8's round robin)</td>" in text
