"""Energy meters: one window per measured generation, read through a single interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Protocol

from specsweep.energy.config import EnergyConfig


@dataclass
class EnergyReading:
    """Energy of one measurement window; `joules` is None when nothing could measure it."""

    joules: Optional[float]
    seconds: float
    per_device: Dict[str, float] = field(default_factory=dict)  # gpu / cpu / dram joules
    source: str = "none"
    estimated: bool = False
    unavailable_reason: Optional[str] = None


class EnergyMeter(Protocol):
    def begin(self, key: str) -> None: ...

    def end(self, key: str) -> EnergyReading: ...

    def close(self) -> None: ...


class NoEnergyMeter:
    """energy=none: every window is unavailable, with the reason."""

    source = "none"

    def __init__(self, reason: str = "energy measurement is off (energy=none)"):
        self._reason = reason
        self._started: Dict[str, float] = {}

    def begin(self, key: str) -> None:
        import time

        self._started[key] = time.perf_counter()

    def end(self, key: str) -> EnergyReading:
        import time

        seconds = time.perf_counter() - self._started.pop(key)
        return EnergyReading(joules=None, seconds=seconds, source=self.source, unavailable_reason=self._reason)

    def close(self) -> None:
        pass


def make_meter(cfg: EnergyConfig) -> EnergyMeter:
    if cfg.meter == "none":
        return NoEnergyMeter()
    raise ValueError(f"energy.meter={cfg.meter!r} is not implemented yet")
