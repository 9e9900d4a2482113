"""Where a study lives, and how a trial whose process died is found and failed.

    sqlite:///outputs/optuna/s.db     SQLite, relative to the working directory (sqlite:////abs/s.db: absolute); any
                                      other SQLAlchemy URL (postgresql://...) works the same way: RDBStorage
    journal:///outputs/optuna/s.log   Optuna's JournalStorage on a JournalFileBackend, read the same way (relative;
                                      journal:////scratch/s.log: absolute): several processes on a shared file system
    null                              in memory, gone when the sweep ends

A trial stays RUNNING until the sweeper that asked it tells its result, so a sweeper that dies leaves it dangling.
Two signals say it died:
  * heartbeats: while a batch runs, the sweeper records a heartbeat for each of its trials every
    `heartbeat_interval` s; none for `grace_period` s means dead, whatever machine the reader is on. RDBStorage has
    Optuna's heartbeat table; Optuna's JournalStorage has no heartbeat, so here it is a trial system attribute.
  * the owner: each trial records its sweeper process (machine, pid, start time). On the same machine a process that
    no longer exists is known dead at once, with no grace period to wait out.
Both feed Optuna's own `fail_stale_trials(study)`: each dead trial is set FAIL exactly once even when several
processes race for it, and the storage's stale-trial callback (RetryHeartbeatStaleTrialCallback) queues it again.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat  # the ABC `fail_stale_trials` checks storages against
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.specsweep_optuna_sweeper._params import SweepConfigError

log = logging.getLogger(__name__)

OWNER_ATTR = "specsweep:owner"  # trial system attribute: the sweeper process that asked the trial
HEARTBEAT_ATTR = "specsweep:heartbeat"  # trial system attribute (journal storage): time of the last heartbeat


def machine_id() -> str:
    """Where a pid names the same process: host name, boot and pid namespace (a container sharing the host name but
    not its processes gets another id). Outside Linux: the host name alone."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    return "/".join(parts)


def this_process() -> Dict[str, Any]:
    return {"machine": machine_id(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def owner_is_dead(owner: Optional[Dict[str, Any]]) -> bool:
    """True only when certain: the owner ran on this machine and its process is gone (or its pid now names a process
    started at another time). Another machine's trials are left to the heartbeat."""
    if not isinstance(owner, dict) or owner.get("machine") != machine_id():
        return False
    try:
        started = psutil.Process(int(owner["pid"])).create_time()
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False
    return abs(started - float(owner.get("started", started))) > 1.0


class _DeadOwners:
    """Stale trials = the storage's heartbeat rule, plus running trials whose owner is dead on this machine."""

    def _get_stale_trial_ids(self, study_id: int) -> List[int]:
        stale = set(super()._get_stale_trial_ids(study_id))  # type: ignore[misc]
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))  # type: ignore[attr-defined]
        stale.update(t._trial_id for t in running if owner_is_dead(t.system_attrs.get(OWNER_ATTR)))
        return sorted(stale)


class SweeperRDBStorage(_DeadOwners, RDBStorage):
    """RDBStorage (Optuna's heartbeat table) that also knows dead owners on this machine."""


class _JournalHeartbeat(BaseHeartbeat):
    """The heartbeat Optuna's JournalStorage lacks: a timestamp in a trial system attribute."""

    def __init__(self, heartbeat_interval: int, grace_period: Optional[int], callback: Any) -> None:
        self.heartbeat_interval, self.grace_period, self.stale_callback = heartbeat_interval, grace_period, callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())  # type: ignore[attr-defined]

    def _get_stale_trial_ids(self, study_id: int) -> List[int]:
        grace = self.grace_period or 2 * self.heartbeat_interval
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))  # type: ignore[attr-defined]
        now = time.time()
        return [t._trial_id for t in running if now - t.system_attrs.get(HEARTBEAT_ATTR, now) > grace]

    def get_heartbeat_interval(self) -> Optional[int]:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Any:
        return self.stale_callback


class SweeperJournalStorage(_DeadOwners, _JournalHeartbeat, JournalStorage):
    """JournalStorage on one log file, with heartbeats and dead-owner detection."""

    def __init__(self, path: Path, heartbeat_interval: int, grace_period: Optional[int], callback: Any) -> None:
        JournalStorage.__init__(self, JournalFileBackend(str(path)))
        _JournalHeartbeat.__init__(self, heartbeat_interval, grace_period, callback)


class RetryDeadTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry (a WAITING copy of the dead trial: same params, asked again), without the dead process's owner
    and heartbeat: copied, they would make the copy look dead the moment it runs."""

    def __call__(self, study, trial: FrozenTrial) -> None:
        clean = copy.copy(trial)
        clean.system_attrs = {k: v for k, v in trial.system_attrs.items() if k not in (OWNER_ATTR, HEARTBEAT_ATTR)}
        super().__call__(study, clean)


def journal_path(url: str) -> Path:
    """journal:///relative/path or journal:////absolute/path, the way SQLAlchemy reads sqlite:/// URLs."""
    rest = url[len("journal:") :]
    if not rest.startswith("///") or len(rest) == 3:
        raise SweepConfigError(
            f"hydra.sweeper.storage={url} is invalid: expected journal:///<path relative to the working directory> "
            "or journal:////<absolute path>"
        )
    return Path(rest[3:])


def _sqlite_dir(url: str) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def open_storage(url: Optional[str], heartbeat_interval: int, grace_period: Optional[int], retries: int):
    """The storage for `hydra.sweeper.storage` (None: in memory), with heartbeats and stale-trial retries."""
    if url is None:
        return None
    with warnings.catch_warnings():  # heartbeats and the retry callback are marked experimental; we rely on both
        warnings.simplefilter("ignore", ExperimentalWarning)
        callback = RetryDeadTrial(max_retry=retries) if retries > 0 else None
        if url.startswith("journal:"):
            path = journal_path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            return SweeperJournalStorage(path, heartbeat_interval, grace_period, callback)
        _sqlite_dir(url)
        kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # several writers wait
        try:
            return SweeperRDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
        except RuntimeError as err:  # e.g. a study file written by an older Optuna: the message says how to upgrade
            raise SweepConfigError(f"hydra.sweeper.storage={url}: {' '.join(str(err).split())}") from None


def fail_dead_trials(study) -> None:
    """Optuna's fail_stale_trials over both signals; a no-op for in-memory studies."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class Heartbeat:
    """While a batch runs: a heartbeat for each of its trials now and every `interval` seconds, from a thread."""

    def __init__(self, storage: BaseStorage, trial_ids: List[int]) -> None:
        self.storage, self.trial_ids = storage, trial_ids
        self.interval = storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _beat(self) -> None:
        while True:
            for trial_id in self.trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
                except Exception as err:  # e.g. another process failed the trial: its tell will say so
                    log.warning("heartbeat of trial id %s not recorded: %s: %s", trial_id, type(err).__name__, err)
            if self.stop.wait(self.interval):
                return
