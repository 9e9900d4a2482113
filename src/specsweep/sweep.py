"""Sweep-level pieces: the end-of-sweep summary (a Hydra callback), the grid's jobs expanded up front for validation,
Optuna define-by-run search spaces that the sweeper's flat `params` cannot express, and what an Optuna study's trials
must share (its conditions)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hydra.experimental.callback import Callback

NGRAM_WINDOW_LIMIT = 5


def ngram_window(cfg, trial) -> None:
    """ngram_min in [1, limit], then ngram_max in [ngram_min, limit]: every sampled window is valid."""
    low = trial.suggest_int("speculation.ngram_min", 1, NGRAM_WINDOW_LIMIT)
    trial.suggest_int("speculation.ngram_max", low, NGRAM_WINDOW_LIMIT)


# What result reuse keys on that an Optuna study must share too (results.validity): prompt content, weights, engine
# versions, thread settings. Not the host, machine or CPU count (a SLURM study's trials run on many nodes; each
# result.json records its own), nor CUDA/HIP_VISIBLE_DEVICES (SLURM gives each job whichever GPU index is free).
STUDY_VALIDITY_PARTS = ("specsweep", "dataset_sha256", "stack", "weights", "environment")
PER_JOB_ENVIRONMENT = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


def study_conditions(job_cfg, swept: Sequence[str]) -> Dict[str, Any]:
    """The conditions every trial of an Optuna study shares (hydra.sweeper.conditions): the job's config minus the
    swept params and the fields that cannot change a measurement (logger, force, dry_run: those the config hash
    skips), plus the validity parts above. A rerun under other conditions is refused by the sweeper."""
    from hydra_plugins.specsweep_optuna_sweeper.conditions import config_conditions, flatten
    from specsweep.config.compose import to_config
    from specsweep.results.store import UNHASHED
    from specsweep.results.validity import validity_parts

    found = config_conditions(job_cfg, swept, drop=UNHASHED)
    try:
        parts = validity_parts(to_config(job_cfg))
    except Exception as err:  # e.g. a missing prompt file: every trial will fail and say why; the study still opens
        return {**found, "validity": f"unreadable: {type(err).__name__}: {err}"}
    parts["environment"] = {k: v for k, v in parts["environment"].items() if k not in PER_JOB_ENVIRONMENT}
    return {**found, **flatten({"validity": {k: parts[k] for k in STUDY_VALIDITY_PARTS}})}


def grid_jobs(overrides: List[str]) -> List[List[str]]:
    """The override list of every job a basic-sweeper multirun will launch (Hydra's own expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def _job_line(row: dict) -> str:
    where = Path(str(row.get("run_dir"))).name
    overrides = ",".join(row.get("overrides") or []) or "(no overrides)"
    return f"  job {where} [{overrides}]: {row.get('status')}: {row.get('error')}"


class SweepSummary(Callback):
    """When a multirun ends (in the launching process, whatever the launcher): one line per job that did not end ok,
    and exit 1 if there was any (or if no job recorded anything), so a sweep never looks green when it was not."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from specsweep.results import store

        if config.get("dry_run"):  # its jobs only printed their native configs: nothing was meant to be recorded
            return
        rows = list(store.read_table(Path(config.hydra.sweep.dir) / store.TABLE_FILE))
        # a rerun into the same sweep dir measures a job again in its run dir: its latest row is what stands
        rows = list({row.get("run_dir") or id(row): row for row in rows}.values())
        bad = [row for row in rows if row.get("status") != "ok"]
        if rows and not bad:
            return
        if not rows:
            print(f"specsweep: no job of the sweep in {config.hydra.sweep.dir} recorded a result", file=sys.stderr)
        else:
            lines = "\n".join(_job_line(row) for row in bad)
            print(f"specsweep: {len(bad)} of {len(rows)} jobs did not end ok:\n{lines}", file=sys.stderr)
        sys.exit(1)
