"""`hydra/sweeper: k_by_load`: the best k at each load level of a served backend, and the engine's schedule of it.

No `from __future__ import annotations` here: Hydra's plugin scan executes this module outside sys.modules, where
dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any, List

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class KByLoadSweeperConf:
    """Per concurrency level: a probe, the best predicted k verified, the schedule checked. docs/tuning.md."""

    _target_: str = "hydra_plugins.specsweep_best_k_sweeper.k_by_load_sweeper.KByLoadSweeper"
    levels: List[int] = field(default_factory=lambda: [1, 2, 4])  # generation.concurrency levels
    probe_k: int = 4  # the probe's k: its per-position acceptance predicts every k <= probe_k at its level
    verify: int = 1  # best predicted k values measured per level besides the probe
    check: bool = True  # run the schedule at every level where the backend takes one (vllm_server)


class KByLoadSweeper(Sweeper):
    def __init__(self, levels: List[int], probe_k: int, verify: int, check: bool = True) -> None:
        self.levels, self.probe_k, self.verify, self.check = list(levels), probe_k, verify, check

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.config_loader = config, hydra_context.config_loader
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: List[str]) -> Any:
        from specsweep.load_tuning import KByLoadSearch

        sweep_dir = self.config.hydra.sweep.dir
        search = KByLoadSearch(self.levels, self.probe_k, self.verify, sweep_dir, self.check, self._compose)
        return search.run(self.launcher, list(arguments))

    def _compose(self, job: List[str]) -> DictConfig:
        """A job's composed config, by this Hydra's own loader (what the launcher will give the job)."""
        return self.config_loader.load_sweep_config(self.config, list(job))


ConfigStore.instance().store(
    group="hydra/sweeper", name="k_by_load", node=KByLoadSweeperConf, provider="specsweep_best_k_sweeper"
)
