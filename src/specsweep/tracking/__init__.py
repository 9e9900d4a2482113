"""Experiment trackers: they receive a finished result and never fail a run."""

from __future__ import annotations

from typing import Any, Dict, Protocol

from specsweep.tracking.config import LoggerConfig


class Tracker(Protocol):
    def log_result(self, result: Dict[str, Any]) -> None:
        """Log one finished (ok or failed) result; must warn, never raise."""
        ...


class NoTracker:
    def log_result(self, result: Dict[str, Any]) -> None:
        pass


def make_tracker(cfg: LoggerConfig) -> Tracker:
    if cfg.name == "none":
        return NoTracker()
    raise ValueError(f"logger.name={cfg.name!r} is not implemented yet")
