"""Experiment-tracker settings (the `logger/` config group)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

LOGGERS = ("none", "wandb")
WANDB_MODES = ("offline", "online")


@dataclass
class LoggerConfig:
    """Where each run's config and results are logged besides the local results store."""

    name: str = "none"  # none | wandb
    mode: str = "offline"  # wandb: offline (no network or key; `wandb sync` later) | online
    project: str = "specsweep"  # wandb project
    entity: Optional[str] = None  # wandb team or user; None: the logged-in user's default
    group: Optional[str] = None  # None: one group per multirun (named after its sweep dir); single runs: none
    tags: List[str] = field(default_factory=list)  # added to the automatic backend, method, model tags
    job_name: Optional[str] = None  # None: built from the job's command-line overrides
    dir: Optional[str] = None  # where wandb writes its files; None: the job's output dir
    init_timeout: float = 30.0  # seconds an online start may take before falling back to offline


def check(cfg: LoggerConfig) -> List[tuple]:
    """(field, value, allowed) for each invalid logger setting."""
    if cfg.name not in LOGGERS:
        return [("logger.name", cfg.name, f"one of {', '.join(LOGGERS)}")]
    problems = []
    if cfg.mode not in WANDB_MODES:
        problems.append(("logger.mode", cfg.mode, f"one of {', '.join(WANDB_MODES)}"))
    if not cfg.project or "/" in cfg.project:
        problems.append(("logger.project", cfg.project, "a non-empty W&B project name without '/'"))
    if not cfg.init_timeout > 0:
        problems.append(("logger.init_timeout", cfg.init_timeout, "a number of seconds > 0"))
    return problems
