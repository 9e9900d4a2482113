"""Build a W&B Report (wandb-workspaces) comparing the methods of one sweep group.

Building the report object needs no network; `Report.save()` publishes it and needs `wandb login` plus the
sweep's runs uploaded (`wandb sync` for offline runs). Metric names are the ones the tracker logs
(specsweep.tracking.wandb.run_summary): `metrics/...`, `energy/...`, `theory/...`, `acceptance_position/<i>`,
`category/<name>/...`; `method` and `k` are top-level config keys.
"""

from __future__ import annotations

from typing import List

SPEEDUP = "metrics/speedup"
J_PER_TOKEN = "energy/joules_per_token"
ACCEPTANCE = "metrics/acceptance_rate"
PREDICTED = "theory/predicted_speedup"


def _runset(wr, expr, entity: str, project: str, group: str, name: str, groupby=None):
    filters = expr.And(expr.Metric("Group") == group)
    return wr.Runset(entity=entity, project=project, name=name, filters=filters, groupby=groupby or [])


def _per_run_panels(wr, max_k: int) -> list:
    """One point per run: speedup, J/token and acceptance against k; prediction against measurement."""
    k, method = wr.Config("k"), wr.Config("method")
    metric = wr.SummaryMetric
    columns = (method, k, metric(ACCEPTANCE), metric(SPEEDUP), metric(J_PER_TOKEN))
    return [
        wr.ScatterPlot(title="Speedup vs k (each run; color = run)", x=k, y=metric(SPEEDUP)),
        wr.ScatterPlot(title="J per token vs k", x=k, y=metric(J_PER_TOKEN)),
        wr.ScatterPlot(title="Acceptance rate vs k", x=k, y=metric(ACCEPTANCE)),
        wr.ScatterPlot(title="Predicted (Leviathan) vs measured speedup", x=metric(PREDICTED), y=metric(SPEEDUP)),
        wr.BarPlot(
            title="Acceptance by draft position (per run)",
            orientation="v",
            metrics=[metric(f"acceptance_position/{i}") for i in range(1, max_k + 1)],
        ),
        wr.ParallelCoordinatesPlot(
            title="method, k -> speedup, J/token",
            columns=[wr.ParallelCoordinatesPlotColumn(metric=c) for c in columns],
        ),
    ]


def _by_method_panels(wr, categories: List[str]) -> list:
    """Runs grouped by method: speedup and J/token (mean over k, min-max), and by prompt category."""
    method, metric = wr.Config("method"), wr.SummaryMetric
    spread = {"groupby": method, "groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"}
    per_category = {"orientation": "v", "groupby": method, "groupby_aggfunc": "mean"}
    return [
        wr.BarPlot(title="Speedup by method (mean over k, min-max)", metrics=[metric(SPEEDUP)], **spread),
        wr.BarPlot(title="J per token by method", metrics=[metric(J_PER_TOKEN)], **spread),
        wr.BarPlot(
            title="Speedup by prompt category (median per run, mean per method)",
            metrics=[metric(f"category/{c}/speedup") for c in categories],
            **per_category,
        ),
        wr.BarPlot(
            title="Acceptance rate by prompt category",
            metrics=[metric(f"category/{c}/acceptance_rate") for c in categories],
            **per_category,
        ),
    ]


def build_report(project: str, entity: str, group: str, categories: List[str], max_k: int, title: str = ""):
    """The report as wandb-workspaces objects (inspect them offline; `.save()` publishes)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    per_run = wr.PanelGrid(
        runsets=[_runset(wr, expr, entity, project, group, f"sweep {group}")], panels=_per_run_panels(wr, max_k)
    )
    by_method = wr.PanelGrid(
        runsets=[_runset(wr, expr, entity, project, group, "by method", groupby=["config.method"])],
        panels=_by_method_panels(wr, categories),
    )
    return wr.Report(
        project=project,
        entity=entity,
        title=title or f"specsweep: speculative decoding methods, sweep {group}",
        description="Speedup, energy per token and acceptance by method, k and prompt category.",
        blocks=[
            wr.H1("Methods compared"),
            wr.P(
                "speedup = tokens/s with speculation over tokens/s without, on the same prompts. "
                "theory/predicted_speedup is a prediction (Leviathan et al. 2023 with the run's fitted alpha and "
                "measured cost ratio c), not a measurement. Energy marked estimated in a run's summary is an estimate."
            ),
            per_run,
            wr.H2("By method"),
            by_method,
        ],
    )
