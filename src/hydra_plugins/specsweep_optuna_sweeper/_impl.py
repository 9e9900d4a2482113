"""The sweep: ask Optuna for a batch of trials, launch them as Hydra jobs, tell Optuna what they returned.

A job's return value is the objective (a float, or a tuple for several directions). A job that raised, or returned
NaN or the wrong number of values, is told as FAIL (its reason in the trial's `fail_reason` user attribute) and the
study goes on until this run's failure rate exceeds `max_failure_rate`. Setting errors and a study recorded under
other conditions end the run before anything is launched: one line on stderr, exit 2.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Tuple

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from optuna.trial import FrozenTrial, Trial, TrialState

from hydra_plugins.specsweep_optuna_sweeper import conditions as cond
from hydra_plugins.specsweep_optuna_sweeper._params import (
    SearchSpace,
    SweepConfigError,
    grid_of,
    override_value,
    parse_params,
)
from hydra_plugins.specsweep_optuna_sweeper._storage import (
    OWNER_ATTR,
    Heartbeat,
    fail_dead_trials,
    open_storage,
    this_process,
)

log = logging.getLogger(__name__)
DIRECTIONS = ("minimize", "maximize")
RESULTS_FILE = "optimization_results.yaml"


@dataclass
class SweeperSettings:
    """`hydra.sweeper` as the sweeper receives it (see config.OptunaSweeperConf for each field's meaning)."""

    sampler: Any = None
    direction: Any = "minimize"
    storage: Optional[str] = None
    study_name: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 2
    max_failure_rate: float = 0.0
    params: Optional[Dict[str, str]] = None
    custom_search_space: Optional[str] = None
    conditions: Optional[str] = None
    heartbeat_interval: int = 60
    grace_period: Optional[int] = None
    stale_trial_retries: int = 1
    directions: List[str] = field(init=False)

    def __post_init__(self) -> None:
        direction = OmegaConf.to_container(self.direction) if isinstance(self.direction, ListConfig) else self.direction
        self.directions = [str(d) for d in (direction if isinstance(direction, (list, tuple)) else [direction])]

    def check(self) -> None:
        """One SweepConfigError naming the first setting that cannot work."""
        bad = [d for d in self.directions if d not in DIRECTIONS] or ([] if self.directions else ["(none)"])
        checks = [
            ("direction", self.direction, "minimize, maximize or a list of them", not bad),
            ("n_trials", self.n_trials, "an integer >= 0", self.n_trials >= 0),
            ("n_jobs", self.n_jobs, "an integer >= 1", self.n_jobs >= 1),
            ("max_failure_rate", self.max_failure_rate, "a number in [0, 1]", 0.0 <= self.max_failure_rate <= 1.0),
            ("heartbeat_interval", self.heartbeat_interval, "an integer >= 1 (seconds)", self.heartbeat_interval >= 1),
            ("stale_trial_retries", self.stale_trial_retries, "an integer >= 0", self.stale_trial_retries >= 0),
        ]
        for key, value, allowed, ok in checks:
            if not ok:
                raise SweepConfigError(f"hydra.sweeper.{key}={value} is invalid: expected {allowed}")

    def label(self) -> str:
        return f"study {self.study_name!r} in {self.storage or 'memory'}"


def run_sweep(
    settings: SweeperSettings, context: HydraContext, task: TaskFunction, config: DictConfig, arguments: List[str]
) -> None:
    """The sweeper's sweep(): prepare (exit 2 on a bad setting or other conditions), run the trials, report."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # trials are logged here, one line each
    try:
        sweep = OptunaSweep.prepare(settings, context, config, arguments)
    except SweepConfigError as err:
        _exit(2, f"specsweep: sweep config error: {err}")
    except ConditionsDiffer as err:
        _exit(2, f"specsweep: {err}")
    sweep.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=context, task_function=task)
    sweep.run()
    sweep.report()


def _exit(code: int, line: str) -> NoReturn:
    print(line, file=sys.stderr)
    sys.exit(code)


class ConditionsDiffer(RuntimeError):
    """The study was recorded under other conditions than this run's: the message is the one line to print."""


def load_custom_space(path: Optional[str]) -> Optional[Callable[[DictConfig, Trial], None]]:
    if not path:
        return None
    try:
        return get_method(path)
    except Exception as err:
        raise SweepConfigError(f"hydra.sweeper.custom_search_space={path} cannot be imported: {err}") from None


def swept_keys(space: SearchSpace, custom: Optional[Callable], config: DictConfig) -> List[str]:
    """The params a trial sets: `params`' sweeps, plus what the define-by-run function suggests (found by running it
    once on a throwaway in-memory trial)."""
    keys = list(space.distributions)
    if custom is not None:
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        trial = probe.ask(fixed_distributions=space.distributions)
        try:
            custom(config, trial)
        except Exception as err:
            raise SweepConfigError(f"hydra.sweeper.custom_search_space failed on a test trial: {err}") from None
        keys += [k for k in trial.params if k not in keys]
    return [k.lstrip("+~") for k in keys]


def make_sampler(node: Any, space: SearchSpace, custom: Optional[Callable]) -> optuna.samplers.BaseSampler:
    """Instantiate the sampler node; a partial one (the grid) gets the grid built from `params`."""
    try:
        sampler = instantiate(node)
        if callable(sampler) and not isinstance(sampler, optuna.samplers.BaseSampler):
            if custom is not None:
                raise SweepConfigError("the grid sampler cannot sample custom_search_space; use sampler=bruteforce")
            sampler = sampler(grid_of(space.distributions))
    except SweepConfigError:
        raise
    except Exception as err:
        raise SweepConfigError(f"hydra.sweeper.sampler cannot be built: {' '.join(str(err).split())}") from None
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise SweepConfigError(f"hydra.sweeper.sampler is a {type(sampler).__name__}, not an Optuna sampler")
    return sampler


def job_conditions(
    settings: SweeperSettings, context: HydraContext, config: DictConfig, space: SearchSpace, swept: List[str]
) -> Dict[str, Any]:
    """What every trial shares: the config a job gets with the fixed overrides alone (Hydra composes it as a
    launcher would), through the `conditions` function; plus the directions."""
    try:
        job_cfg = context.config_loader.load_sweep_config(config, list(space.fixed.values()))
    except Exception as err:  # e.g. a fixed value in `params` that the config's type refuses
        raise SweepConfigError(f"the trials' config cannot be composed: {_one_line(err)}") from None
    with open_dict(job_cfg):
        del job_cfg["hydra"]
    try:
        function = get_method(settings.conditions) if settings.conditions else cond.config_conditions
    except Exception as err:
        raise SweepConfigError(f"hydra.sweeper.conditions={settings.conditions} cannot be imported: {err}") from None
    found = dict(function(job_cfg, swept))
    found["hydra.sweeper.direction"] = settings.directions
    return cond.normalized(found)


def check_conditions(study: optuna.Study, conditions: Dict[str, Any], label: str) -> None:
    """Record the conditions on a new study; refuse a study recorded under others (or under none, with trials)."""
    has_trials = bool(study.get_trials(deepcopy=False))  # read before the attribute: its creator sets that first
    stored = study.user_attrs.get(cond.CONDITIONS_ATTR)
    advice = "pick another hydra.sweeper.study_name (nothing was launched)"
    if stored is None and has_trials:
        raise ConditionsDiffer(f"{label} holds trials but no recorded conditions (an older sweeper made it); {advice}")
    if stored is None:
        study.set_user_attr(cond.CONDITIONS_ATTR, conditions)
        return
    diff = cond.differences(stored, conditions)
    if diff:
        raise ConditionsDiffer(f"{label} holds trials measured under other conditions ({'; '.join(diff)}); {advice}")


def _job_dir(ret: JobReturn) -> str:
    """The job's output dir (its result.json); the working dir is the launch dir when Hydra does not chdir."""
    output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
    return str(output_dir or ret.working_dir)


def _one_line(err: BaseException) -> str:
    # specsweep.core.one_line's twin: this sweeper imports nothing of specsweep, so it works for any Hydra app
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def objective_values(ret: JobReturn, n_objectives: int) -> Tuple[Optional[List[float]], str]:
    """(values, "") for a usable return value; (None, why) for a failed job or an unusable value."""
    if ret.status != JobStatus.COMPLETED:
        return None, _one_line(ret._return_value)
    value = ret._return_value
    raw = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None, f"the job returned {value!r}, not {'a number' if n_objectives == 1 else 'numbers'}"
    if len(values) != n_objectives:
        return None, f"the job returned {len(values)} values for {n_objectives} directions"
    if any(math.isnan(v) for v in values):
        return None, f"the objective is NaN ({value!r}): the job's result.json lacks it"
    return values, ""


class OptunaSweep:
    """One run of the sweeper over one study."""

    def __init__(self, settings: SweeperSettings, config: DictConfig, study: optuna.Study, space: SearchSpace):
        self.settings, self.config, self.study, self.space = settings, config, study, space
        self.custom: Optional[Callable[[DictConfig, Trial], None]] = None
        self.launcher: Any = None
        self.conditions: Dict[str, Any] = {}
        self.job_idx, self.finished, self.failed, self.exhausted = 0, 0, 0, False

    @classmethod
    def prepare(
        cls, settings: SweeperSettings, context: HydraContext, config: DictConfig, arguments: List[str]
    ) -> OptunaSweep:
        settings.check()
        params = [f"{k}={v}" for k, v in (settings.params or {}).items()]
        space = parse_params(params + list(arguments))
        custom = load_custom_space(settings.custom_search_space)
        conditions = job_conditions(settings, context, config, space, swept_keys(space, custom, config))
        storage = open_storage(
            settings.storage, settings.heartbeat_interval, settings.grace_period, settings.stale_trial_retries
        )
        study = optuna.create_study(
            storage=storage,
            sampler=make_sampler(settings.sampler, space, custom),
            study_name=settings.study_name,
            directions=settings.directions,
            load_if_exists=True,
        )
        check_conditions(study, conditions, settings.label())
        sweep = cls(settings, config, study, space)
        sweep.custom, sweep.conditions = custom, conditions
        return sweep

    def run(self) -> None:
        remaining = self.settings.n_trials
        log.info("%s: %d trials so far; adding %d", self.settings.label(), len(self.study.trials), remaining)
        while remaining > 0 and not self.exhausted:
            fail_dead_trials(self.study)  # trials whose sweeper died: FAIL (and queued again) before asking
            try:
                check_conditions(self.study, self.conditions, self.settings.label())  # a racing process's record
            except ConditionsDiffer as err:
                _exit(2, f"specsweep: {err}")
            if self._grid_exhausted():
                break
            batch = min(self.settings.n_jobs, remaining)
            self.run_batch([self.ask() for _ in range(batch)])
            remaining -= batch
            self.check_failure_rate()

    def _grid_exhausted(self) -> bool:
        sampler = self.study.sampler
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(self.study):
            log.info("every point of the grid has a finished trial: nothing left to ask")
            return True
        return False

    def ask(self) -> Trial:
        with warnings.catch_warnings():  # heartbeats are meant for optimize(); we record them ourselves
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask(fixed_distributions=self.space.distributions)
        self.study._storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, this_process())
        if self.custom is not None:
            self.custom(self.config, trial)
        return trial

    def overrides(self, trial: Trial) -> List[str]:
        swept = [f"{name}={override_value(value)}" for name, value in trial.params.items()]
        return [*self.space.fixed.values(), *swept]

    def run_batch(self, trials: List[Trial]) -> None:
        overrides = [self.overrides(t) for t in trials]
        with Heartbeat(self.study._storage, [t._trial_id for t in trials]), self._fail_if_stopped(trials):
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        for trial, ret in zip(trials, returns):
            self.tell(trial, ret)

    @contextlib.contextmanager
    def _fail_if_stopped(self, trials: List[Trial]) -> Iterator[None]:
        """A batch ended by Ctrl-C, SIGTERM or a job's sys.exit: its trials are told FAIL, never left RUNNING."""
        try:
            yield
        except BaseException as err:
            for trial in trials:
                with contextlib.suppress(Exception):
                    trial.set_user_attr("fail_reason", f"the sweep stopped: {_one_line(err)}")
                    self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise

    def tell(self, trial: Trial, ret: JobReturn) -> None:
        values, why = objective_values(ret, len(self.settings.directions))
        self.finished += 1
        try:
            trial.set_user_attr("job_dir", _job_dir(ret))
            if values is None:
                self.failed += 1
                trial.set_user_attr("fail_reason", why)
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, values)
        except RuntimeError as err:
            if "Study.stop" not in str(err):  # a grid / brute-force sampler asking to stop: the trial is stored
                return self._told_elsewhere(trial, err)
            self.exhausted = True
        except ValueError as err:
            return self._told_elsewhere(trial, err)
        log.info("trial %d %s: %s", trial.number, trial.params, values if values is not None else f"FAIL ({why})")

    def _told_elsewhere(self, trial: Trial, err: Exception) -> None:
        log.warning(
            "trial %d was finished by another process (no heartbeat for the grace period?): %s", trial.number, err
        )

    def check_failure_rate(self) -> None:
        limit = self.settings.max_failure_rate
        if self.finished and self.failed / self.finished > limit:
            _exit(
                1,
                f"specsweep: optuna sweep stopped: {self.failed} of {self.finished} trials failed in this run "
                f"(hydra.sweeper.max_failure_rate={limit}); each failed job's result.json says why",
            )

    def report(self) -> None:
        """optimization_results.yaml in the sweep dir: the best trial, or the Pareto front for several directions."""
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            _exit(
                1,
                f"specsweep: no trial of {self.settings.label()} has completed ({self.failed} of {self.finished} "
                "failed in this run); each failed job's result.json says why",
            )
        results = {"name": "optuna", "study_name": self.study.study_name, "storage": self.settings.storage}
        if len(self.settings.directions) == 1:
            best = self.study.best_trial
            results.update(best_trial=best.number, best_params=best.params, best_value=best.value)
            log.info("best: trial %d %s -> %s", best.number, best.params, best.value)
        else:
            results["solutions"] = [_solution(t) for t in self.study.best_trials]
            log.info("Pareto front: %d trials", len(results["solutions"]))
        path = Path(str(self.config.hydra.sweep.dir)) / RESULTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), path)


def _solution(trial: FrozenTrial) -> Dict[str, Any]:
    return {"number": trial.number, "params": trial.params, "values": list(trial.values)}
