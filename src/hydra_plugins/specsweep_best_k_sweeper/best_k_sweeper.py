"""`hydra/sweeper: best_k`: probe once at a large k, predict speedup for every smaller k, measure the best few.

No `from __future__ import annotations` here: Hydra's plugin scan executes this module outside sys.modules, where
dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class BestKSweeperConf:
    """The theory-guided search for k (and, for prompt lookup, the n-gram window). docs/sweeps.md explains it."""

    _target_: str = "hydra_plugins.specsweep_best_k_sweeper.best_k_sweeper.BestKSweeper"
    probe_k: int = 8  # the probe's k: its per-position acceptance predicts every k <= probe_k
    verify: int = 2  # best predicted k values measured for real besides the probe (per window)
    windows: List[int] = field(default_factory=list)  # ngram only: one probe per speculation.ngram_max; empty: as set
    adaptive: bool = True  # also measure the engine's own adaptive draft lengths (where it has any) beside the choice


class BestKSweeper(Sweeper):
    def __init__(self, probe_k: int, verify: int, windows: Optional[List[int]] = None, adaptive: bool = True) -> None:
        self.probe_k, self.verify, self.windows, self.adaptive = probe_k, verify, list(windows or []), adaptive

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.config_loader = config, hydra_context.config_loader
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: List[str]) -> Any:
        from specsweep.tuning import BestKSearch

        sweep_dir = self.config.hydra.sweep.dir
        search = BestKSearch(self.probe_k, self.verify, self.windows, sweep_dir, self.adaptive, self._compose)
        return search.run(self.launcher, list(arguments))

    def _compose(self, job: List[str]) -> DictConfig:
        """A job's composed config, by this Hydra's own loader (what the launcher will give the job)."""
        return self.config_loader.load_sweep_config(self.config, list(job))


ConfigStore.instance().store(
    group="hydra/sweeper", name="best_k", node=BestKSweeperConf, provider="specsweep_best_k_sweeper"
)
