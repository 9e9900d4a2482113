"""The report's figures (matplotlib, headless). Each returns a Figure, or a string saying why there is none."""

from __future__ import annotations

from typing import Dict, List, Tuple, Union

from specsweep.measure import theory
from specsweep.report.data import (
    Job,
    by_series,
    category_speedups,
    cost_curve,
    crossover,
    curve_label,
    load_curves,
    pareto_front,
    pooled_theory,
    series_label,
    serving,
)
from specsweep.report.data import (
    acceptance_map as accept_map,
)

Figure = object


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int):
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def speedup_vs_k(jobs: List[Job]) -> Union[Figure, str]:
    groups = by_series(jobs)
    pts = {
        s: [j for j in js if j.k is not None and j.stat("speedup").get("median") is not None]
        for s, js in groups.items()
    }
    if not any(pts.values()):
        return "no job with a measured speedup and a k (needs measurement.baseline=true)"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 4.5))
    labels = list(groups)
    for color, (series, js) in zip(_colors(len(pts)), pts.items()):
        if not js:
            continue
        label = series_label(series, labels)
        ks = [j.k for j in js]
        med = [j.stat("speedup")["median"] for j in js]
        lo = [
            m - (j.stat("speedup").get("ci_low") if j.stat("speedup").get("ci_low") is not None else m)
            for j, m in zip(js, med)
        ]
        hi = [
            (j.stat("speedup").get("ci_high") if j.stat("speedup").get("ci_high") is not None else m) - m
            for j, m in zip(js, med)
        ]
        ax.errorbar(ks, med, yerr=[lo, hi], marker="o", capsize=4, color=color, label=f"{label}: measured (median, CI)")
        _model_curves(ax, groups[series], max(ks), color, label)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("k (draft tokens per verification step)")
    ax.set_ylabel("speedup over no speculation (x)")
    ax.set_title(
        "Speedup vs k: measured per-prompt median with interval\n"
        "solid = cost model (timed forwards), dashed = i.i.d. model (no per-step overhead)"
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the points, never over them
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _model_curves(ax, jobs: List[Job], k_max: int, color, label: str) -> None:
    """The series' predictions beside its measured points: the cost model's curve where a job of it timed its
    forwards (measurement.cost_model=true), and the i.i.d. model (Leviathan et al.) labelled as what it is: with
    c = 0 for a free proposer it ignores what verifying k+1 tokens costs beyond one step, so it over-predicts."""
    curve = cost_curve(jobs)
    if curve is not None:
        probe_k, points = curve
        ax.plot(
            list(points),
            list(points.values()),
            "-",
            color=color,
            lw=1.2,
            label=f"{label}: cost model (probe k={probe_k})",
        )
    pooled = pooled_theory(jobs)
    if pooled["alpha"] is not None and pooled["cost_ratio"] is not None:
        grid = list(range(1, k_max + 3))
        ax.plot(
            grid,
            [theory.expected_speedup(pooled["alpha"], k, pooled["cost_ratio"]) for k in grid],
            "--",
            color=color,
            alpha=0.6,
            label=f"{label}: i.i.d. model (alpha={pooled['alpha']:.2f}, c={pooled['cost_ratio']:.2f})",
        )


def joules_per_token_vs_k(jobs: List[Job]) -> Union[Figure, str]:
    groups = by_series(jobs)
    pts = {
        s: [j for j in js if j.k is not None and j.energy("joules_per_token") is not None] for s, js in groups.items()
    }
    if not any(pts.values()):
        reasons = sorted(
            {(j.row.get("energy") or {}).get("unavailable_reason") or "not recorded" for j in jobs if j.ok}
        )
        return "energy was not measured in these jobs: " + "; ".join(reasons)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = list(groups)
    estimated = False
    for color, (series, js) in zip(_colors(len(pts)), pts.items()):
        if not js:
            continue
        estimated |= any((j.row.get("energy") or {}).get("estimated") for j in js)
        ax.plot(
            [j.k for j in js],
            [j.energy("joules_per_token") for j in js],
            marker="o",
            color=color,
            label=series_label(series, labels),
        )
        base = [(j.k, j.energy("joules_per_token") / j.energy("energy_ratio")) for j in js if j.energy("energy_ratio")]
        if base:
            ax.plot(
                [k for k, _ in base],
                [b for _, b in base],
                ls=":",
                marker="x",
                color=color,
                label=f"{series_label(series, labels)}: its baseline",
            )
    ax.set_xticks(sorted({j.k for js in pts.values() for j in js}))
    ax.set_xlabel("k")
    ax.set_ylabel("J per output token")
    ax.set_title("Energy per token vs k" + (" (includes estimates, see table)" if estimated else ""))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def acceptance_per_position(jobs: List[Job]) -> Union[Figure, str]:
    groups = {
        s: [j for j in js if (j.row.get("metrics") or {}).get("acceptance_per_position")]
        for s, js in by_series(jobs).items()
    }
    groups = {s: js for s, js in groups.items() if js}
    if not groups:
        return "no acceptance counts recorded"
    plt = _plt()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False, sharey=True)
    labels = list(groups)
    for ax, (series, js) in zip(axes[0], groups.items()):
        for color, j in zip(_colors(len(js)), js):
            rates = j.row["metrics"]["acceptance_per_position"]
            ax.plot(range(1, len(rates) + 1), rates, marker="o", color=color, label=f"k={j.k}")
            given = [
                (i + 1, r) for i, r in enumerate(j.row["metrics"].get("acceptance_per_position_conditional") or [])
            ]
            given = [(i, r) for i, r in given if r is not None]
            if given:  # older records lack it
                ax.plot(*zip(*given), marker="x", linestyle="--", color=color, alpha=0.7)
        ax.set_title(series_label(series, labels), fontsize=9)
        ax.set_xlabel("draft position i")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("P(token i accepted)")
    fig.suptitle(
        "Acceptance per draft position: per draft step (solid), given tokens 1..i-1 accepted (dashed)", fontsize=10
    )
    fig.tight_layout()
    return fig


def speedup_by_category(jobs: List[Job]) -> Union[Figure, str]:
    import textwrap

    groups = by_series(jobs)
    labels = list(groups)
    bars: List[Tuple[str, Dict[str, float]]] = []
    for series, js in groups.items():
        for j in js:
            cats = category_speedups(j)
            if cats:
                bars.append((f"{series_label(series, labels)} k={j.k}", cats))
    if not bars:
        return "no per-prompt speedups (result.json files missing, or no baseline)"
    categories = sorted({c for _, cats in bars for c in cats})
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(categories) * max(1, len(bars)) + 2), 5))
    width = 0.8 / len(bars)
    for i, (color, (label, cats)) in enumerate(zip(_colors(len(bars)), bars)):
        xs = [c + (i - (len(bars) - 1) / 2) * width for c in range(len(categories))]
        ax.bar(xs, [cats.get(c, 0) for c in categories], width=width, color=color, label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    top = max(v for _, cats in bars for v in cats.values())
    ax.set_ylim(0, max(top, 1.0) * 1.12)  # every bar fits, however large its speedup
    # long category names: wrapped, and slanted when there are many
    ax.set_xticks(range(len(categories)), [textwrap.fill(c, 14) for c in categories])
    if len(categories) > 6 or max(len(c) for c in categories) > 14:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    ax.set_ylabel("median per-prompt speedup (x)")
    ax.set_title("Speedup by prompt category")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def predicted_curve(jobs: List[Job]) -> Union[Figure, str]:
    """The cost model's speedup-vs-k curve of each probe (theory.curve), the i.i.d. curve, and every measured k."""
    probes = [j for j in jobs if j.ok and j.theory("curve")]
    if not probes:
        return "no probe job (measurement.cost_model=true, e.g. hparams_search=best_k) in these sweeps"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = list(by_series(jobs))
    for color, probe in zip(_colors(len(probes)), probes):
        label = series_label(probe.series, labels)
        points = probe.theory("curve")["points"]
        ks = [p["k"] for p in points]
        ax.plot(ks, [p["speedup"] for p in points], "-", color=color, label=f"{label}: predicted (probe k={ks[-1]})")
        iid = [p.get("iid_speedup") for p in points]
        if all(v is not None for v in iid):
            ax.plot(ks, iid, ":", color=color, alpha=0.8, label=f"{label}: i.i.d. model")
        measured = [j for j in jobs if j.ok and j.series == probe.series and j.metric("speedup") is not None]
        ax.plot(
            [j.k for j in measured],
            [j.metric("speedup") for j in measured],
            "o",
            color=color,
            label=f"{label}: measured",
        )
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("k (draft tokens per verification step)")
    ax.set_ylabel("speedup over no speculation (x)")
    ax.set_title("Speedup vs k: the probe's cost-model curve, the i.i.d. curve, and measured points", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def predicted_vs_measured(jobs: List[Job]) -> Union[Figure, str]:
    pts = [j for j in jobs if j.ok and j.theory("predicted_speedup") is not None and j.metric("speedup") is not None]
    if not pts:
        return "no job has both a predicted and a measured speedup (needs a baseline and a measured cost ratio)"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    labels = list(by_series(jobs))
    series = list(dict.fromkeys(j.series for j in pts))
    for color, s in zip(_colors(len(series)), series):
        js = [j for j in pts if j.series == s]
        ax.scatter(
            [j.theory("predicted_speedup") for j in js],
            [j.metric("speedup") for j in js],
            color=color,
            label=series_label(s, labels),
        )
        for j in js:
            ax.annotate(
                f"k={j.k}",
                (j.theory("predicted_speedup"), j.metric("speedup")),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    values = [v for j in pts for v in (j.theory("predicted_speedup"), j.metric("speedup"))]
    lo, hi = min(values + [1.0]) * 0.9, max(values + [1.0]) * 1.1
    ax.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=0.8, label="measured = predicted")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted speedup (Leviathan, this job's alpha and c)")
    ax.set_ylabel("measured speedup (tokens/s ratio)")
    ax.set_title("Predicted vs measured speedup", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def latency_energy_pareto(jobs: List[Job]) -> Union[Figure, str]:
    pts = [j for j in jobs if j.ok and j.metric("tpot_s") and j.energy("joules_per_token") is not None]
    if len(pts) < 2:
        return "needs at least two jobs with energy measured (an energy=... option) to draw a latency-energy front"
    xy = [(1000.0 * j.metric("tpot_s"), j.energy("joules_per_token")) for j in pts]  # the latency_energy preset's axes
    front = pareto_front(xy)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter([x for x, _ in xy], [y for _, y in xy], color="lightgrey", label="all jobs")
    ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "o-", color="crimson", label="Pareto front")
    for i in front:
        j = pts[i]
        ax.annotate(f"{j.row.get('method')} k={j.k}", xy[i], fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency: TPOT, ms per output token after the first (lower is better)")
    estimated = any((j.row.get("energy") or {}).get("estimated") for j in pts)
    ax.set_ylabel("J per output token" + (" (ESTIMATED)" if estimated else "") + " (lower is better)")
    ax.set_title("Latency-energy Pareto front" + (" (energy estimated, not metered)" if estimated else ""), fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


NO_SERVED = "no served job with speculation (e.g. backend=llamacpp_server speculation=none,ngram)"


def _concurrency_axis(ax, levels) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(levels), [str(c) for c in sorted(levels)])
    ax.set_xlabel("concurrency (requests in flight)")
    ax.grid(alpha=0.3)


def speedup_vs_concurrency(jobs: List[Job]) -> Union[Figure, str]:
    """Output-throughput speedup per configuration vs concurrency; where it falls below 1 is marked."""
    curves = {k: [j for j in js if j.metric("speedup") is not None] for k, js in load_curves(jobs).items()}
    curves = {k: js for k, js in curves.items() if js}
    if not curves:
        return NO_SERVED + " with a measured speedup"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = {j.row["concurrency"] for js in curves.values() for j in js}
    for color, (key, js) in zip(_colors(len(curves)), curves.items()):
        xs, ys = [j.row["concurrency"] for j in js], [j.metric("speedup") for j in js]
        ax.plot(xs, ys, marker="o", color=color, label=curve_label(key, list(curves)))
        cross = crossover(list(zip(xs, ys)))
        if cross["kind"] == "crosses":
            ax.axvline(cross["at"], color=color, ls="--", lw=1)
            ax.annotate(
                f"stops paying ~{cross['at']:.3g}",
                (cross["at"], 1.0),
                color=color,
                fontsize=7,
                xytext=(-4, 6),
                textcoords="offset points",
                ha="right",  # left of the line, which would strike through it
            )
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="off (no speculation)")
    _concurrency_axis(ax, levels)
    ax.set_ylabel("speedup: output tokens/s over no speculation (x)")
    ax.set_title("Speedup vs concurrency (dashed: where speculation stops paying)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def latency_vs_concurrency(jobs: List[Job]) -> Union[Figure, str]:
    """TTFT and inter-token latency percentiles vs concurrency; the baseline at the same load dotted."""
    curves = load_curves(jobs)
    if not curves:
        return NO_SERVED
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    levels = {j.row["concurrency"] for js in curves.values() for j in js}
    for ax, metric, title in zip(axes, ("ttft_s", "itl_s"), ("time to first token", "inter-token latency")):
        for color, (key, js) in zip(_colors(len(curves)), curves.items()):
            label = curve_label(key, list(curves))
            xs = [j.row["concurrency"] for j in js]
            for stat, ls in (("p50", "-"), ("p99", "--")):
                ax.plot(
                    xs,
                    [serving(j, "speculative", metric, stat) for j in js],
                    ls=ls,
                    marker="o",
                    color=color,
                    label=f"{label} {stat}",
                )
            base = [serving(j, "baseline", metric, "p50") for j in js]
            if any(b is not None for b in base):
                ax.plot(xs, base, ls=":", marker="x", color=color, label=f"{label}: baseline p50")
        _concurrency_axis(ax, levels)
        ax.set_ylabel(f"{title}, s")
        ax.set_title(f"{title} (p50 solid, p99 dashed)", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def joules_per_token_vs_concurrency(jobs: List[Job]) -> Union[Figure, str]:
    curves = {k: [j for j in js if j.energy("joules_per_token") is not None] for k, js in load_curves(jobs).items()}
    curves = {k: js for k, js in curves.items() if js}
    if not curves:
        return NO_SERVED + " with energy measured (an energy=... option where a meter works)"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (key, js) in zip(_colors(len(curves)), curves.items()):
        xs = [j.row["concurrency"] for j in js]
        ax.plot(
            xs,
            [j.energy("joules_per_token") for j in js],
            marker="o",
            color=color,
            label=curve_label(key, list(curves)),
        )
        base = [
            (j.row["concurrency"], j.energy("joules_per_token") / j.energy("energy_ratio"))
            for j in js
            if j.energy("energy_ratio")
        ]
        if base:
            ax.plot(*zip(*base), ls=":", marker="x", color=color, label=f"{curve_label(key, list(curves))}: baseline")
    _concurrency_axis(ax, {j.row["concurrency"] for js in curves.values() for j in js})
    ax.set_ylabel("J per output token")
    ax.set_title("Energy per token vs concurrency", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def acceptance_map(jobs: List[Job]) -> Union[Figure, str]:
    """Speedup over (acceptance length, k) measured with a set acceptance (speculation.synthetic_acceptance): each
    point's colour is its speedup, the 1.0x contour divides paying from not paying, each k's break-even acceptance
    is marked, and the same backend's real drafts sit on the map where their measured acceptance puts them."""
    found = accept_map(jobs)
    points = [(x, k, y) for k, xy in found["by_k"].items() for x, y in xy if x is not None]
    if not points:
        return (
            "no job verified with a set acceptance (speculation.synthetic_acceptance on backend=vllm, e.g. "
            "-m speculation=draft_model speculation.num_speculative_tokens=1,2,4 "
            "speculation.synthetic_acceptance=0.3,0.6,0.9)"
        )
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    xs, ks, ys = zip(*points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(min(ys), 0.99), vmax=max(max(ys), 1.01))
    dots = ax.scatter(xs, ks, c=ys, cmap="RdYlGn", norm=norm, s=90, edgecolors="grey", zorder=3)
    for x, k, y in points:
        ax.annotate(f"{y:.2f}", (x, k), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
    if len(set(ks)) > 1 and len(points) >= 3:
        try:
            ax.tricontour(xs, ks, ys, levels=[1.0], colors="black", linewidths=1.2)
        except (ValueError, RuntimeError):  # collinear points: no triangulation, the break-even marks remain
            pass
    marked = [(x, k) for k, x in found["break_even"].items() if x is not None]
    if marked:
        ax.plot(*zip(*marked), "k|", markersize=16, mew=2, label="break-even acceptance (1.0x) per k")
    _real_drafts(ax, found["real"])
    fig.colorbar(dots, ax=ax, label="speedup over no speculation (x)")
    ax.set_xlabel("mean acceptance length (tokens per verification step, measured)")
    ax.set_ylabel("k (draft tokens per step)")
    ax.set_yticks(sorted(set(ks)))
    ax.set_ylim(min(ks) - 0.6, max(ks) + 0.6)  # room for the labels above the first and last rows
    ax.margins(x=0.08)
    ax.set_title("Acceptance map: speedup at a set acceptance\nblack line = 1.0x; stars = real drafts", fontsize=9)
    if marked:
        ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _real_drafts(ax, jobs: List[Job]) -> None:
    """Jobs with real acceptance, as stars where their measured acceptance length and k put them on the map."""
    for j in jobs:
        at = (j.metric("mean_acceptance_length"), j.k)
        ax.plot(*at, "*", color="white", mec="black", markersize=14, zorder=4)
        label = f"real draft {j.metric('speedup'):.2f}x"
        ax.annotate(label, at, textcoords="offset points", xytext=(8, -10), fontsize=7)


FIGURES = {
    "speedup_vs_k": ("Speedup vs k", speedup_vs_k),
    "predicted_vs_measured": ("Theory vs. measurement", predicted_vs_measured),
    "predicted_curve": ("Predicted speedup curve (cost model)", predicted_curve),
    "joules_per_token_vs_k": ("Energy per token vs k", joules_per_token_vs_k),
    "acceptance_per_position": ("Acceptance per position", acceptance_per_position),
    "speedup_by_category": ("Speedup by prompt category", speedup_by_category),
    "latency_energy_pareto": ("Latency-energy Pareto front", latency_energy_pareto),
    "acceptance_map": ("Acceptance map: what acceptance a draft needs to pay", acceptance_map),
    "speedup_vs_concurrency": ("Speedup vs concurrency (served)", speedup_vs_concurrency),
    "latency_vs_concurrency": ("TTFT and inter-token latency vs concurrency (served)", latency_vs_concurrency),
    "joules_per_token_vs_concurrency": ("Energy per token vs concurrency (served)", joules_per_token_vs_concurrency),
}
