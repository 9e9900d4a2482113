"""Weights & Biases tracker: one W&B run per job, offline by default, never failing the job.

What a run holds: the resolved config (+ environment) as W&B config; every scalar of result.json (metrics, stats
intervals, energy, lossless check, timing, theory, per-category medians, per-position acceptance) as summary;
per-prompt rows as a W&B Table; per-position acceptance as a bar chart. A failed job becomes a failed run with
its error. Files go under the job's output dir (`<run dir>/wandb/`), so an offline run is uploaded later with
`wandb sync <run dir>/wandb/offline-run-*`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import fields
from pathlib import Path
from statistics import median
from typing import Any, Dict, Iterator, List, Optional

from specsweep.core import one_line
from specsweep.results.types import IDENTITY_FIELDS, PromptRow
from specsweep.tracking.config import LoggerConfig

log = logging.getLogger(__name__)

PER_PROMPT_COLUMNS = tuple(f.name for f in fields(PromptRow))  # the W&B per-prompt table: every per_prompt key
# wandb writes caches and artifact staging under the home directory unless told otherwise.
_DIR_VARS = {"WANDB_CACHE_DIR": "cache", "WANDB_DATA_DIR": "data"}


def sweep_group(sweep_dir: Path) -> str:
    """The W&B group of every job of one multirun: the sweep dir's name (also what scripts/wandb_report.py takes)."""
    return Path(sweep_dir).resolve().name


def run_name(result: Dict[str, Any]) -> str:
    overrides = result.get("overrides") or []
    if overrides:
        return ",".join(overrides)
    return f"{result.get('backend')}-{result.get('method')}" + (
        f"-k{result['k']}" if result.get("k") is not None else ""
    )


def run_tags(result: Dict[str, Any], extra: List[str]) -> List[str]:
    tags = [
        f"backend:{result.get('backend')}",
        f"method:{result.get('method')}",
        f"model:{result.get('model')}",
        *extra,
    ]
    return list(dict.fromkeys(t[:64] for t in tags))  # W&B caps a tag at 64 characters


def run_config(result: Dict[str, Any]) -> Dict[str, Any]:
    """The resolved config, with the job's identity fields and the engine's native config and environment on top."""
    return {
        **(result.get("config") or {}),
        **{k: result.get(k) for k in IDENTITY_FIELDS},
        "native_config": result.get("native_config"),
        "environment": result.get("environment"),
    }


def _scalars(prefix: str, node: Any, out: Dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _scalars(f"{prefix}/{key}" if prefix else str(key), value, out)
    elif isinstance(node, (bool, int, str)) or (isinstance(node, float) and math.isfinite(node)):
        out[prefix] = node


def _category_medians(per_prompt: List[Dict[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    by_cat: Dict[str, List[Dict[str, Any]]] = {}
    for row in per_prompt:
        by_cat.setdefault(str(row.get("category")), []).append(row)
    for cat, rows in by_cat.items():
        for key in ("speedup", "acceptance_rate", "tokens_per_s"):
            values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
            if values:
                out[f"category/{cat}/{key}"] = median(values)
    return out


def run_summary(result: Dict[str, Any]) -> Dict[str, Any]:
    """Every scalar in result.json, flattened with '/' (lists and per-prompt rows go to their own panels)."""
    out: Dict[str, Any] = {"status": result.get("status")}
    if result.get("error"):
        out["error"] = result["error"]
    for section in ("metrics", "stats", "energy", "lossless", "timing", "theory", "baseline"):
        _scalars(section, result.get(section) or {}, out)
    for i, rate in enumerate((result.get("metrics") or {}).get("acceptance_per_position") or [], start=1):
        out[f"acceptance_position/{i}"] = rate
    out.update(_category_medians(result.get("per_prompt") or []))
    return out


@contextlib.contextmanager
def _wandb_dirs(root: Path) -> Iterator[None]:
    """Point wandb's cache and staging dirs under the run's output for this run (a user's own setting wins)."""
    saved = {var: os.environ.get(var) for var in _DIR_VARS}
    for var, sub in _DIR_VARS.items():
        if not saved[var]:
            os.environ[var] = str(root / sub)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


class WandbTracker:
    def __init__(self, cfg: LoggerConfig, run_dir: Path, sweep_dir: Optional[Path] = None):
        self.cfg = cfg
        self.run_dir = run_dir
        self.group = cfg.group or (sweep_group(sweep_dir) if sweep_dir else None)
        self.dir = Path(cfg.dir).expanduser() if cfg.dir else run_dir

    def log_result(self, result: Dict[str, Any]) -> None:
        try:
            self._log(result)
        except Exception as err:  # W&B is a copy: the local result.json and results tables are already written
            log.warning(
                "W&B logging failed, local results are intact in %s: %s: %s", self.run_dir, type(err).__name__, err
            )

    def _init(self, wandb, result: Dict[str, Any]):
        kwargs = dict(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.group,
            name=self.cfg.job_name or run_name(result),
            tags=run_tags(result, list(self.cfg.tags)),
            config=run_config(result),
            dir=str(self.dir),
            job_type=result.get("method"),
            settings=wandb.Settings(
                console="off",
                x_disable_stats=True,
                # no system metadata: it holds the raw command line (secrets included); the config has the environment
                x_disable_meta=True,
                silent=True,
                init_timeout=self.cfg.init_timeout,
            ),
        )
        if self.cfg.mode == "online":
            try:
                return wandb.init(mode="online", **kwargs)
            except Exception as err:
                log.warning(
                    "W&B online start failed (%s); logging this run offline instead, `wandb sync` it later",
                    one_line(err),
                )
        return wandb.init(mode="offline", **kwargs)

    def _log(self, result: Dict[str, Any]) -> None:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        with _wandb_dirs(self.dir / "wandb"):
            run = self._init(wandb, result)
            failed = result.get("status") != "ok"
            try:
                run.summary.update(run_summary(result))
                panels: Dict[str, Any] = {}
                rows = result.get("per_prompt") or []
                if rows:
                    panels["per_prompt"] = wandb.Table(
                        columns=list(PER_PROMPT_COLUMNS), data=[[r.get(c) for c in PER_PROMPT_COLUMNS] for r in rows]
                    )
                positions = (result.get("metrics") or {}).get("acceptance_per_position") or []
                if positions:
                    table = wandb.Table(
                        columns=["position", "acceptance"], data=[[i, p] for i, p in enumerate(positions, 1)]
                    )
                    panels["acceptance_per_position"] = wandb.plot.bar(
                        table, "position", "acceptance", title="P(draft token at position i accepted)"
                    )
                if panels:
                    run.log(panels)
            finally:
                run.finish(exit_code=1 if failed else 0)
                wandb.teardown()  # flush and close the run file now, not at process exit (a killed job keeps it)
        where = run.settings.sync_dir
        if run.settings.mode == "offline":
            log.info("W&B offline run in %s (upload: wandb sync %s)", where, where)
