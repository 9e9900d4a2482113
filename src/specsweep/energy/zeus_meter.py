"""energy=zeus: hardware energy counters read through Zeus' ZeusMonitor (package `zeus`, not the old `zeus-ml`).

NVIDIA GPUs: NVML's total-energy counter (Volta+, updates about every 0.1 s); AMD GPUs: amdsmi;
CPU package and DRAM: RAPL (powercap sysfs, updates about every 1 ms; Zeus tracks counter wrap-around
in a helper process). With no counter at all, every window is unavailable, with the reason.

Device synchronization at window edges is the runner's job (`engine.synchronize()` when the engine has it):
the meter cannot know the engine, so Zeus' own torch-based sync is off.
"""

from __future__ import annotations

from typing import Any, Dict, List

from specsweep.energy import EnergyReading
from specsweep.energy.config import EnergyConfig

NVML_UPDATE_S = 0.1  # NVML's total-energy counter advances about every 100 ms
RAPL_UPDATE_S = 0.001  # RAPL energy status updates about every 1 ms
PRIME_KEY = "specsweep-prime"
DEFAULT_RAPL_DIR = "/sys/class/powercap/intel-rapl"  # Zeus' own default (zeus.device.cpu.rapl.RAPL_DIR)


def _use_rapl_dir(rapl_dir: str) -> None:
    """Point Zeus' RAPL reader at `rapl_dir` (Zeus reads the module constant; its caches are reset when it changes)."""
    import zeus.device.cpu as zeus_cpu
    import zeus.device.cpu.rapl as rapl

    if rapl.RAPL_DIR != rapl_dir:
        rapl.RAPL_DIR = rapl_dir
        rapl.rapl_is_available.cache_clear()
        zeus_cpu._cpus = None


def _gpu_unavailable_reason() -> str:
    from zeus.device.gpu import amdsmi_is_available, nvml_is_available

    try:
        nvml = nvml_is_available()
    except ImportError as err:  # Zeus refuses the unofficial `pynvml` package
        return f"NVML unusable ({err})"
    if nvml:
        return "NVML found no GPU"
    return "no NVIDIA GPU (NVML unavailable)" + (
        "" if amdsmi_is_available() else " and no AMD GPU (amdsmi unavailable)"
    )


def _cpu_unavailable_reason() -> str:
    import zeus.device.cpu.rapl as rapl

    if not rapl.rapl_is_available():
        return f"no RAPL counters ({rapl.RAPL_DIR} does not exist)"
    return (
        f"RAPL counters under {rapl.RAPL_DIR} are not readable (reading energy_uj needs root, or run the Zeus daemon)"
    )


class ZeusMeter:
    """One ZeusMonitor for the whole job; each begin/end pair is one Zeus measurement window."""

    def __init__(self, cfg: EnergyConfig):
        import zeus.device.cpu.rapl as rapl

        _use_rapl_dir(cfg.rapl_dir or DEFAULT_RAPL_DIR)
        from zeus.device.gpu import AMDGPUs
        from zeus.monitor import ZeusMonitor

        self._monitor = ZeusMonitor(
            gpu_indices=cfg.gpu_indices, cpu_indices=cfg.cpu_indices, approx_instant_energy=cfg.approx_instant_energy
        )
        self._gpus: List[int] = list(self._monitor.gpu_indices)
        self._cpus: List[int] = list(self._monitor.cpu_indices)
        not_measured: Dict[str, str] = {}
        if not self._gpus:
            not_measured["gpu"] = "off (energy.gpu_indices=[])" if cfg.gpu_indices == [] else _gpu_unavailable_reason()
        if not self._cpus:
            reason = "off (energy.cpu_indices=[])" if cfg.cpu_indices == [] else _cpu_unavailable_reason()
            not_measured["cpu"] = not_measured["dram"] = reason
        parts = []
        if self._gpus:
            parts.append("amdsmi" if isinstance(self._monitor.gpus, AMDGPUs) else "nvml")
        if self._cpus:
            parts.append("rapl")
            # The first RAPL read starts Zeus' wrap-around tracker processes: do it now, not inside a measured window.
            self._monitor.begin_window(PRIME_KEY, sync_execution=False)
            if self._monitor.end_window(PRIME_KEY, sync_execution=False).dram_energy is None:
                not_measured["dram"] = f"no RAPL dram zone under {rapl.RAPL_DIR}"
        self.source = "zeus-" + "+".join(parts) if parts else "zeus"
        self._reason = (
            None if parts else "no energy counter on this machine: " + "; ".join(dict.fromkeys(not_measured.values()))
        )
        self._approx = cfg.approx_instant_energy
        if self._gpus:
            handling = (
                "approx_instant_energy: a GPU window whose NVML counter did not advance is charged "
                "instant power x duration (Zeus)"
                if self._approx
                else "none: a GPU window whose NVML counter did not advance is reported unavailable (null), never 0 J"
            )
        else:
            handling = "not needed: RAPL counters update about every 1 ms"
        self.context: Dict[str, Any] = {
            "counter_update_s": NVML_UPDATE_S if self._gpus else RAPL_UPDATE_S if self._cpus else None,
            "short_window_handling": handling if parts else None,
            "not_measured": not_measured,
            "devices": {"gpu": self._gpus, "cpu": self._cpus},
        }

    def begin(self, key: str) -> None:
        self._monitor.begin_window(key, sync_execution=False)

    def end(self, key: str) -> EnergyReading:
        m = self._monitor.end_window(key, sync_execution=False)
        if self._reason is not None:
            return EnergyReading(
                None, m.time, source=self.source, unavailable_reason=self._reason, context=self.context
            )
        stalled = [i for i, j in m.gpu_energy.items() if j == 0.0]
        if stalled and not self._approx and m.time < NVML_UPDATE_S:
            reason = (
                f"GPU {stalled} energy counter did not advance in a {m.time * 1000:.0f} ms window "
                f"(NVML updates about every {NVML_UPDATE_S * 1000:.0f} ms): set energy.approx_instant_energy=true "
                "or make windows longer (more max_new_tokens, larger batch_size)"
            )
            return EnergyReading(None, m.time, source=self.source, unavailable_reason=reason, context=self.context)
        per_device: Dict[str, float] = {}
        if self._gpus:
            per_device["gpu"] = sum(m.gpu_energy.values())
        if m.cpu_energy is not None:
            per_device["cpu"] = sum(m.cpu_energy.values())
        if m.dram_energy is not None:
            per_device["dram"] = sum(m.dram_energy.values())
        return EnergyReading(sum(per_device.values()), m.time, per_device, source=self.source, context=self.context)

    def close(self) -> None:
        self._monitor.reset_windows()
