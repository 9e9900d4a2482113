"""Energy measurement settings (the `energy/` config group)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EnergyConfig:
    """Which energy meter wraps each measured generation."""

    meter: str = "none"  # none | zeus | codecarbon
