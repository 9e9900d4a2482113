"""Energy measurement settings (the `energy/` config group) and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

from specsweep.core import Choice
from specsweep.fields import bounded


class Meter(Choice):
    none = "none"  # no energy measurement (recorded as unavailable, with the reason)
    zeus = "zeus"  # hardware counters: NVML, amdsmi, RAPL
    codecarbon = "codecarbon"  # an estimate where no counter exists (labelled estimated)


class TrackingMode(Choice):
    process = "process"
    machine = "machine"


METERS = tuple(m.value for m in Meter)


@dataclass
class EnergyConfig:
    """Which energy meter wraps each measured generation."""

    meter: Meter = Meter.none  # zeus (hardware counters) | codecarbon (estimate) | none
    # zeus: GPUs to read (after CUDA_VISIBLE_DEVICES); None: all found; []: none
    gpu_indices: Optional[List[int]] = bounded(None, ge=0, each=True, null="all found ([] for none)")
    # zeus: RAPL packages to read; None: all found; []: none
    cpu_indices: Optional[List[int]] = bounded(None, ge=0, each=True, null="all found ([] for none)")
    approx_instant_energy: bool = True  # zeus: a GPU window shorter than NVML's ~0.1 s update = instant power x time
    rapl_dir: Optional[str] = (
        None  # zeus: powercap root holding intel-rapl:N; None: Zeus' default (remapped sysfs, tests)
    )
    tracking_mode: TrackingMode = TrackingMode.process  # codecarbon: process (this process and children) | machine
    idle_seconds: float = bounded(
        0.0, ge=0
    )  # measure idle power this long (once per process) and report idle-corrected energy; 0: off

    def check(self, cfg: Any = None) -> List[Tuple[str, Any, str]]:
        """Rules beyond the declared bounds; nothing is imported or measured."""
        problems = []
        if self.rapl_dir is not None and not Path(self.rapl_dir).is_dir():
            problems.append(
                ("energy.rapl_dir", self.rapl_dir, "an existing powercap directory (holding intel-rapl:N) or null")
            )
        if self.idle_seconds > 0 and self.meter == Meter.none:
            problems.append(
                ("energy.idle_seconds", self.idle_seconds, "0 when energy.meter=none (nothing measures idle power)")
            )
        return problems
