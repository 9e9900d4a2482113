"""Energy meters: one window per measured generation, read through a single interface.

`make_meter` is the only factory. zeus and codecarbon are imported lazily, in the meter that needs them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional, Protocol

from specsweep.energy.config import EnergyConfig
from specsweep.energy.section import energy_section


@dataclass
class EnergyReading:
    """Energy of one measurement window; `joules` is None when nothing could measure it."""

    joules: Optional[float]
    seconds: float
    per_device: Dict[str, float] = field(default_factory=dict)  # gpu / cpu / dram joules
    source: str = "none"
    estimated: bool = False
    unavailable_reason: Optional[str] = None
    context: Dict[str, Any] = field(default_factory=dict)  # the meter's facts (counter update period, idle power, ...)


class EnergyMeter(Protocol):
    source: str
    context: Dict[str, Any]  # facts every reading carries: counter_update_s, short_window_handling, not_measured, idle

    def begin(self, key: str) -> None: ...

    def end(self, key: str) -> EnergyReading: ...

    def close(self) -> None: ...


class NoEnergyMeter:
    """energy=none: every window is unavailable, with the reason."""

    source = "none"

    def __init__(self, reason: str = "energy measurement is off (energy=none)"):
        self._reason = reason
        self._started: Dict[str, float] = {}
        self.context: Dict[str, Any] = {}

    def begin(self, key: str) -> None:
        self._started[key] = time.perf_counter()

    def end(self, key: str) -> EnergyReading:
        seconds = time.perf_counter() - self._started.pop(key)
        return EnergyReading(joules=None, seconds=seconds, source=self.source, unavailable_reason=self._reason)

    def close(self) -> None:
        pass


# Session slot: idle power measured earlier in this process (a Hydra basic-launcher sweep), by energy config.
IDLE_POWER = "energy.idle_power"
IDLE_KEY = "specsweep-idle"


def idle_baseline(meter: EnergyMeter, cfg: EnergyConfig, session) -> Dict[str, Any]:
    """Idle watts per device over `cfg.idle_seconds` of sleep, measured once per process and energy config."""
    key = json.dumps(asdict(cfg), sort_keys=True, default=str)
    cached = session.slot(IDLE_POWER, capacity=4)
    if key in cached:
        return {**cached.get(key), "source": "cached: measured earlier in this process with the same energy config"}
    meter.begin(IDLE_KEY)
    time.sleep(cfg.idle_seconds)
    reading = meter.end(IDLE_KEY)
    if reading.joules is None:
        idle = {"watts": None, "unavailable_reason": reading.unavailable_reason}
    else:
        idle = {
            "watts": {dev: j / reading.seconds for dev, j in reading.per_device.items()},
            "seconds": reading.seconds,
            "estimated": reading.estimated,
        }
    cached.put(key, idle)
    return {**idle, "source": "measured in this job before loading any model"}


def make_meter(cfg: EnergyConfig, session) -> EnergyMeter:
    if cfg.meter == "none":
        return NoEnergyMeter()
    if cfg.meter == "zeus":
        from specsweep.energy.zeus_meter import ZeusMeter

        meter: EnergyMeter = ZeusMeter(cfg)
    elif cfg.meter == "codecarbon":
        from specsweep.energy.codecarbon_meter import CodeCarbonMeter

        meter = CodeCarbonMeter(cfg)
    else:
        raise ValueError(f"energy.meter={cfg.meter!r} is invalid: expected one of none, zeus, codecarbon")
    if cfg.idle_seconds > 0:
        meter.context["idle"] = idle_baseline(meter, cfg, session)
    return meter


__all__ = ["EnergyConfig", "EnergyMeter", "EnergyReading", "NoEnergyMeter", "energy_section", "make_meter"]
