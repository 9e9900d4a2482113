"""Experiment-tracker settings (the `logger/` config group)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from specsweep.core import Choice
from specsweep.fields import bounded


class LoggerName(Choice):
    none = "none"  # the local results store only
    wandb = "wandb"  # Weights & Biases


class WandbMode(Choice):
    offline = "offline"
    online = "online"


@dataclass
class LoggerConfig:
    """Where each run's config and results are logged besides the local results store."""

    name: LoggerName = LoggerName.none  # none | wandb
    mode: WandbMode = WandbMode.offline  # wandb: offline (no network or key; `wandb sync` later) | online
    project: str = "specsweep"  # wandb project
    entity: Optional[str] = None  # wandb team or user; None: the logged-in user's default
    group: Optional[str] = None  # None: one group per multirun (named after its sweep dir); single runs: none
    tags: List[str] = field(default_factory=list)  # added to the automatic backend, method, model tags
    job_name: Optional[str] = None  # None: built from the job's command-line overrides
    dir: Optional[str] = None  # where wandb writes its files; None: the job's output dir
    init_timeout: float = bounded(30.0, gt=0)  # seconds an online start may take before falling back to offline

    def check(self, cfg: Any = None) -> List[Tuple[str, Any, str]]:
        if not self.project or "/" in self.project:
            return [("logger.project", self.project, "a non-empty W&B project name without '/'")]
        return []
