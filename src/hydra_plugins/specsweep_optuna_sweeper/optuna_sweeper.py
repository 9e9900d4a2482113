"""The Hydra Sweeper plugin class. Hydra imports this module at every start, so it stays light: the sweep (and Optuna)
is imported only when a sweep runs."""

from typing import Any, List

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Hydra sweeper that asks Optuna for trials, launches them as Hydra jobs and tells Optuna their objective."""

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.specsweep_optuna_sweeper._impl import SweeperSettings

        self.settings = SweeperSettings(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def sweep(self, arguments: List[str]) -> None:
        from hydra_plugins.specsweep_optuna_sweeper._impl import run_sweep

        run_sweep(self.settings, self.hydra_context, self.task_function, self.config, arguments)
