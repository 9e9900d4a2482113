"""Experiment-tracker settings (the `logger/` config group)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoggerConfig:
    """Where each run's config and results are logged besides the local results store."""

    name: str = "none"  # none | wandb
