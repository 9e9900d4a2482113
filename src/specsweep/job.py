"""A job's life: where Hydra runs it, whether an earlier result can answer it (the reuse policy), SIGTERM, recording
it whatever happens (`recording` is the one place failures are handled), and how the process exits after a failure.

What a result *is* (its types, the store it lands in, what it depends on) lives in `specsweep.results`; this module
decides what happens to one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from specsweep.core import one_line
from specsweep.results import store
from specsweep.results.redact import redact_overrides
from specsweep.results.types import Result, now, summary_row
from specsweep.results.validity import changed, validity

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # anyio's backport (httpx needs anyio, which needs it before 3.11)
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("specsweep")


class JobFailed(RuntimeError):
    """Raised to a sweeper that records failed trials from the job's exception (Optuna's marks the trial FAIL)."""


@dataclass
class JobPaths:
    """Where one Hydra job records: its run dir, its sweep's (or runs') table, and the global store."""

    run_dir: Path
    table: Path
    store: Path
    overrides: List[str]
    multirun: bool
    basic_sweeper: bool = True  # Hydra's grid sweeper: it would re-raise a job's exception with a traceback
    remeasured_because: Optional[List[str]] = None  # set when an earlier ok result of this config no longer holds

    @classmethod
    def from_hydra(cls) -> JobPaths:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from hydra.utils import get_original_cwd

        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        run_dir = Path(hc.runtime.output_dir)
        table = (Path(hc.sweep.dir) if multirun else run_dir.parent) / store.TABLE_FILE
        global_store = Path(get_original_cwd()) / "outputs" / store.TABLE_FILE
        basic = str(hc.sweeper.get("_target_", "")).endswith("BasicSweeper")
        return cls(run_dir, table, global_store, list(hc.overrides.task), multirun, basic)


def reusable_result(cfg, job: JobPaths) -> Optional[Dict[str, Any]]:
    """An earlier ok result of this exact config (None with force=true), recorded in this job's run dir and table
    marked `reused_from`, so the sweep that reused it is complete."""
    if cfg.force:
        return None
    done = store.find_done(job.store, store.config_hash(cfg))
    if done is None:
        return None
    prior = json.loads((Path(done["run_dir"]) / store.RESULT_FILE).read_text())
    current = validity(cfg)
    if (prior.get("validity") or {}).get("key") != current["key"]:
        because = changed(prior.get("validity"), current)
        log.warning(
            "measuring again: the ok result in %s no longer holds (changed: %s)", done["run_dir"], ", ".join(because)
        )
        job.remeasured_because = because
        return None
    log.info("reusing the ok result of this config in %s (force=true measures again)", done["run_dir"])
    reused = {
        **prior,
        "reused_from": prior.get("reused_from") or done["run_dir"],
        "overrides": redact_overrides(job.overrides),
    }
    store.write_result(job.run_dir, reused)
    row = summary_row(reused, job.run_dir)
    _guarded(f"append to {job.table}", lambda: store.append_row(job.table, row))
    return reused


class JobInterrupted(BaseException):
    """SIGTERM (how SLURM and submitit end a job at its time limit), raised where the job is, so it is recorded."""


def _guarded(step: str, action) -> None:
    """One epilogue step; its failure is logged and does not stop the steps after it."""
    try:
        action()
    except Exception as err:
        log.error("could not %s: %s: %s", step, type(err).__name__, err)


def _record(result: Result, cfg, job: JobPaths) -> None:
    """result.json first (the record that matters), then the table rows, then the tracker, each on its own."""
    from specsweep.tracking import make_tracker

    result.finished_at = now()
    _guarded(f"write {job.run_dir / store.RESULT_FILE}", lambda: store.write_result(job.run_dir, result.to_dict()))
    row = result.summary_row(job.run_dir)
    _guarded(f"append to {job.table}", lambda: store.append_row(job.table, row))
    if job.store != job.table:
        _guarded(f"append to {job.store}", lambda: store.append_row(job.store, row))
    tracker = make_tracker(cfg.logger, job.run_dir, job.table.parent if job.multirun else None)
    _guarded("log to the tracker", lambda: tracker.log_result(result.to_dict()))


@contextlib.contextmanager
def _sigterm_raises(received: List[str]) -> Iterator[None]:
    """SIGTERM raises JobInterrupted where the job is, and is noted in `received`: code that turns the exception
    into another one (an extension module's import says "initialization failed") cannot hide it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        received.append(f"{signal.Signals(signum).name} received")
        raise JobInterrupted(received[-1])

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interruption(err: BaseException) -> Optional[BaseException]:
    """The Ctrl-C or SIGTERM that ended the job, also when an async task group wrapped it in a BaseExceptionGroup
    (the load generator's httpx connects inside one: the signal lands there as often as anywhere)."""
    if isinstance(err, (KeyboardInterrupt, JobInterrupted)):
        return err
    if isinstance(err, BaseExceptionGroup):
        group = err.subgroup(lambda e: isinstance(e, (KeyboardInterrupt, JobInterrupted)))
        while isinstance(group, BaseExceptionGroup):
            group = group.exceptions[0]
        return group
    return None


def _failed(result: Result, err: BaseException) -> None:
    """A failed job is recorded, never lost, and the sweep goes on; a config error is its one line."""
    from specsweep.config.validate import ConfigError

    result.status, result.error = "failed", one_line(err)
    trace = "" if isinstance(err, ConfigError) else "\n" + traceback.format_exc()
    log.error("job failed: %s%s", result.error, trace)


@contextlib.contextmanager
def recording(cfg, job: JobPaths) -> Iterator[Result]:
    """Yield the job's Result and record it however the job ends.

    A `running` record is written first, so a job killed outright (SIGKILL, the OOM killer) leaves one. An error is
    recorded as `failed` (the caller decides what follows: `failed_job`); Ctrl-C and SIGTERM as `interrupted` (then
    the process exits 130 or 143: the sweep stops). A rerun measures every job that has no ok result.
    """
    result = Result.start(cfg, store.config_hash(cfg), job.overrides)
    result.validity = {**validity(cfg), "remeasured_because": job.remeasured_because}
    store.write_result(job.run_dir, result.to_dict())
    received: List[str] = []
    try:
        with _sigterm_raises(received):
            yield result
        result.status = "ok"
    except BaseException as err:
        stop = _interruption(err) or (JobInterrupted(received[0]) if received else None)
        if stop is not None:
            result.status, result.error = "interrupted", str(stop) or type(stop).__name__
        elif isinstance(err, Exception):
            _failed(result, err)
        else:
            raise  # SystemExit, GeneratorExit: not a job outcome
    finally:
        _record(result, cfg, job)
    if result.status == "interrupted":
        print(f"specsweep: interrupted ({result.error}); recorded in {job.run_dir}", file=sys.stderr)
        sys.exit(130 if result.error == "KeyboardInterrupt" else 143)


def failed_job(result: Result, cfg, job: JobPaths) -> Any:
    """After a failed job: one line; a single run then exits 1. In a sweep the sweep goes on and its summary exits
    non-zero at the end: a grid sweep gets a NaN objective, another sweeper (Optuna) the exception it marks FAIL."""
    print(f"specsweep: job failed: {result.error} (recorded in {job.run_dir / store.RESULT_FILE})", file=sys.stderr)
    if not job.multirun:
        sys.exit(1)
    if not job.basic_sweeper:
        raise JobFailed(result.error)
    nan = tuple(math.nan for _ in cfg.measurement.objective)
    return nan[0] if len(nan) == 1 else nan
