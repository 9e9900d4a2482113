"""Experiment trackers: they receive a finished result and never fail a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Protocol

from specsweep.tracking.config import LoggerConfig


class Tracker(Protocol):
    def log_result(self, result: Dict[str, Any]) -> None:
        """Log one finished (ok or failed) result; must warn, never raise."""
        ...


class NoTracker:
    def log_result(self, result: Dict[str, Any]) -> None:
        pass


def make_tracker(cfg: LoggerConfig, run_dir: Optional[Path] = None, sweep_dir: Optional[Path] = None) -> Tracker:
    """run_dir: the job's output dir (tracker files go there); sweep_dir: the multirun's dir (one group per sweep)."""
    if cfg.name == "wandb":
        from specsweep.tracking.wandb import WandbTracker  # wandb itself is imported only when a result is logged

        return WandbTracker(cfg, Path(run_dir) if run_dir else Path.cwd(), sweep_dir)
    return NoTracker()
