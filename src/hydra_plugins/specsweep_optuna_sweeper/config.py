"""The sweeper's config (`hydra/sweeper: optuna`) and its samplers (`hydra/sweeper/sampler: tpe|random|...`).

Registered in Hydra's ConfigStore when Hydra scans its plugins. No Optuna import here: samplers are `_target_` nodes
the sweeper instantiates when a sweep starts. No `from __future__ import annotations` either: Hydra executes plugin
modules before putting them in sys.modules, where dataclasses look string annotations up.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SamplerConfig:
    """Any Optuna sampler: `_target_` and its keyword arguments."""

    _target_: str = MISSING  # e.g. optuna.samplers.TPESampler


@dataclass
class TPESamplerConfig(SamplerConfig):
    """Tree-structured Parzen Estimator (the default): single- and multi-objective."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None  # fix it to reproduce a study's suggestions
    n_startup_trials: int = 10  # random trials before TPE models the results
    n_ei_candidates: int = 24  # candidates scored per suggestion
    multivariate: Optional[bool] = None  # model parameters jointly; null: Optuna's default
    constant_liar: bool = True  # running trials count as bad ones, so parallel trials (n_jobs > 1) spread out


@dataclass
class RandomSamplerConfig(SamplerConfig):
    """Independent uniform sampling."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None  # fix it to reproduce a study's suggestions


@dataclass
class GridSamplerConfig(SamplerConfig):
    """Every combination of the (discrete) params once; n_trials is capped at the grid's unvisited points."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True  # the sweeper passes the grid, built from `params`
    seed: Optional[int] = None  # order in which grid points are visited


@dataclass
class BruteForceSamplerConfig(SamplerConfig):
    """Every combination of a discrete space, define-by-run spaces (custom_search_space) included."""

    _target_: str = "optuna.samplers.BruteForceSampler"
    seed: Optional[int] = None  # order in which points are visited
    avoid_premature_stop: bool = False  # count only COMPLETE trials as visited (FAIL trials are tried again)


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """CMA-ES: continuous (and integer) single-objective spaces; needs the `cmaes` package."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None  # fix it to reproduce a study's suggestions
    sigma0: Optional[float] = None  # initial step size; null: a sixth of the search range
    n_startup_trials: int = 1  # independent (random) trials before CMA-ES starts
    popsize: Optional[int] = None  # population size; null: CMA-ES's default for the dimension
    use_separable_cma: bool = False  # diagonal covariance: cheaper in high dimensions
    with_margin: bool = False  # CMA-ES with margin, for integer/discrete params
    lr_adapt: bool = False  # learning-rate adaptation, for noisy or multimodal objectives


@dataclass
class GPSamplerConfig(SamplerConfig):
    """Gaussian-process Bayesian optimisation: few, expensive trials (uses torch and scipy)."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None  # fix it to reproduce a study's suggestions
    n_startup_trials: int = 10  # random trials before the GP models the results
    deterministic_objective: bool = False  # true only if a trial's value has no noise (timings always have)


@dataclass
class QMCSamplerConfig(SamplerConfig):
    """Quasi-Monte-Carlo (low-discrepancy) sampling: an even cover of the space."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None  # scrambling seed
    qmc_type: str = "sobol"  # sobol | halton
    scramble: bool = False  # randomise the sequence (then `seed` matters)


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """NSGA-II genetic algorithm: multi-objective (Pareto) studies."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None  # fix it to reproduce a study's suggestions
    population_size: int = 50  # trials per generation
    mutation_prob: Optional[float] = None  # null: 1 / number of params
    crossover_prob: float = 0.9  # probability that a child is a crossover of two parents
    swapping_prob: float = 0.5  # per-parameter swap probability in uniform crossover


@dataclass
class NSGAIIISamplerConfig(NSGAIISamplerConfig):
    """NSGA-III: NSGA-II with reference points, for three or more objectives."""

    _target_: str = "optuna.samplers.NSGAIIISampler"
    dividing_parameter: int = 3  # divisions per objective axis of the reference points


SAMPLERS = {
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "grid": GridSamplerConfig,
    "bruteforce": BruteForceSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "gp": GPSamplerConfig,
    "qmc": QMCSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "nsgaiii": NSGAIIISamplerConfig,
}


@dataclass
class OptunaSweeperConf:
    """`hydra/sweeper: optuna`. The keys and sweep syntax of hydra-optuna-sweeper 1.3, plus storage safety."""

    _target_: str = "hydra_plugins.specsweep_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds its sampler itself, after parsing the space (a grid needs it)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    sampler: Any = MISSING  # a hydra/sweeper/sampler option, or any `_target_` node of an Optuna sampler
    direction: Any = "minimize"  # minimize | maximize, or a list of them (multi-objective: a Pareto front)
    storage: Optional[str] = None  # sqlite:///<path>, another SQLAlchemy URL, journal:///<path>; null: in memory
    study_name: Optional[str] = None  # the study to create or resume in `storage`
    n_trials: int = 20  # trials this run adds to the study
    n_jobs: int = 2  # trials asked at once and handed to the launcher as one batch
    max_failure_rate: float = 0.0  # stop (exit 1) once this run's failed / finished trials exceed it
    params: Optional[Dict[str, str]] = None  # key -> Hydra sweep syntax: choice(), range(), interval(), tag(log, ...)
    custom_search_space: Optional[str] = None  # dotted path of fn(cfg, trial) that suggests more params (define-by-run)
    conditions: Optional[str] = "specsweep.sweep.study_conditions"  # fn(job_cfg, swept) -> what trials must share
    heartbeat_interval: int = 60  # seconds between heartbeats of this process's running trials
    grace_period: Optional[int] = None  # seconds without a heartbeat before a trial counts as dead; null: 2x interval
    stale_trial_retries: int = 1  # a trial whose process died is FAIL, and asked again this many times (0: never)


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="specsweep_optuna_sweeper")
    for name, node in SAMPLERS.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="specsweep_optuna_sweeper")


register()
