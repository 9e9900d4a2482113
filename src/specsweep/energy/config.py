"""Energy measurement settings (the `energy/` config group) and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

METERS = ("none", "zeus", "codecarbon")
TRACKING_MODES = ("process", "machine")


@dataclass
class EnergyConfig:
    """Which energy meter wraps each measured generation."""

    meter: str = "none"  # one of METERS: zeus (hardware counters) | codecarbon (estimate) | none
    gpu_indices: Optional[List[int]] = None  # zeus: GPUs to read (after CUDA_VISIBLE_DEVICES); None: all found; []: none
    cpu_indices: Optional[List[int]] = None  # zeus: RAPL packages to read; None: all found; []: none
    approx_instant_energy: bool = True  # zeus: a GPU window shorter than NVML's ~0.1 s counter update = instant power x duration
    rapl_dir: Optional[str] = None  # zeus: powercap root holding intel-rapl:N; None: Zeus' default (advanced: remapped sysfs, tests)
    tracking_mode: str = "process"  # codecarbon: process (this process and its children) | machine
    idle_seconds: float = 0.0  # measure idle power this long (once per process) and also report idle-corrected energy; 0: off


def check(cfg: EnergyConfig) -> List[tuple]:
    """(field, value, allowed) for every invalid energy setting; nothing is imported or measured."""
    if cfg.meter not in METERS:
        return [("energy.meter", cfg.meter, f"one of {', '.join(METERS)}")]
    problems = []
    for name in ("gpu_indices", "cpu_indices"):
        indices = getattr(cfg, name)
        if indices is not None and any(i < 0 for i in indices):
            problems.append((f"energy.{name}", list(indices), "a list of device indices >= 0, [] for none, or null for all"))
    if cfg.rapl_dir is not None and not Path(cfg.rapl_dir).is_dir():
        problems.append(("energy.rapl_dir", cfg.rapl_dir, "an existing powercap directory (holding intel-rapl:N) or null"))
    if cfg.tracking_mode not in TRACKING_MODES:
        problems.append(("energy.tracking_mode", cfg.tracking_mode, f"one of {', '.join(TRACKING_MODES)}"))
    if cfg.idle_seconds < 0:
        problems.append(("energy.idle_seconds", cfg.idle_seconds, "a number of seconds >= 0 (0 = no idle baseline)"))
    elif cfg.idle_seconds > 0 and cfg.meter == "none":
        problems.append(("energy.idle_seconds", cfg.idle_seconds, "0 when energy.meter=none (nothing measures idle power)"))
    return problems
