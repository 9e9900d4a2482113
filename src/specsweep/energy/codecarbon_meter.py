"""energy=codecarbon: CodeCarbon's energy *estimate*, for machines with no energy counter; labelled estimated
everywhere.

Without RAPL, CodeCarbon models CPU power as TDP x CPU load and RAM power as a fixed figure; GPUs come from NVML
when present. Only energy is recorded (never emissions); nothing is written to disk or sent anywhere.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Dict

from specsweep.energy import EnergyReading
from specsweep.energy.config import EnergyConfig

J_PER_KWH = 3.6e6
PRIME_KEY = "specsweep-prime"
ESTIMATE = (
    "CodeCarbon estimate: CPU from RAPL when readable, else TDP x CPU load; "
    "RAM from a fixed power model; GPU from NVML when present"
)


class CodeCarbonMeter:
    """One offline CodeCarbon tracker for the whole job; each begin/end pair is one CodeCarbon task."""

    source = "codecarbon-estimate"

    def __init__(self, cfg: EnergyConfig):
        from codecarbon import OfflineEmissionsTracker, __version__

        self._tracker = OfflineEmissionsTracker(
            # required by the offline tracker; it only affects emissions, which are not recorded
            country_iso_code="USA",
            tracking_mode=cfg.tracking_mode,
            output_methods=[],  # write nothing: only the energy numbers are used
            allow_multiple_runs=True,  # other CodeCarbon users on the machine must not silently disable this one
            log_level="error",
        )
        self._names = itertools.count()
        self._active: Dict[str, tuple] = {}  # key -> (task name, perf_counter at begin)
        self.context: Dict[str, Any] = {
            "counter_update_s": None,
            "short_window_handling": "not applicable: CodeCarbon estimates each window from power samples at its edges",
            "not_measured": {},
            "estimate": f"{ESTIMATE} (codecarbon {__version__}, tracking_mode={cfg.tracking_mode})",
        }
        # The first task initializes CodeCarbon's hardware probes (seconds): do it now, not inside a measured window.
        self.begin(PRIME_KEY)
        primed = self.end(PRIME_KEY)
        if primed.joules is not None and "gpu" not in primed.per_device:
            self.context["not_measured"]["gpu"] = "CodeCarbon found no GPU"

    def begin(self, key: str) -> None:
        name = f"{key}-{next(self._names)}"  # CodeCarbon renames repeated task names, so each window gets its own
        self._tracker.start_task(name)
        self._active[key] = (name, time.perf_counter())

    def end(self, key: str) -> EnergyReading:
        name, started = self._active.pop(key)
        data = self._tracker.stop_task(name)
        if data is None:
            reason = "CodeCarbon did not measure this window (its tracker failed to start; see its log)"
            return EnergyReading(
                None,
                time.perf_counter() - started,
                source=self.source,
                estimated=True,
                unavailable_reason=reason,
                context=self.context,
            )
        per_device = {"cpu": data.cpu_energy * J_PER_KWH, "dram": data.ram_energy * J_PER_KWH}
        if data.gpu_count:
            per_device["gpu"] = data.gpu_energy * J_PER_KWH
        return EnergyReading(
            sum(per_device.values()),
            data.duration,
            per_device,
            source=self.source,
            estimated=True,
            context=self.context,
        )

    def close(self) -> None:
        self._tracker.stop()
