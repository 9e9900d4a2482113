"""The `energy` section of result.json, from the per-window readings of the speculative and baseline phases.

A phase is anything with `.energy` (its EnergyReadings, one per timed generate call) and `.output_tokens()`.
Unknown values are None with a reason, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from specsweep.core import ratio
from specsweep.results.types import Energy, IdleCorrected, Windows


@dataclass
class PhaseEnergy:
    """One phase's readings summed: joules (None with the reason when any window went unmeasured)."""

    joules: Optional[float]
    per_device: Optional[Dict[str, float]]
    source: Optional[str]
    estimated: bool
    unavailable_reason: Optional[str]


def _phase_energy(phase) -> PhaseEnergy:
    readings = phase.energy
    if not readings:
        return PhaseEnergy(None, None, None, False, "no measurement window")
    first = readings[0]
    missing = [r for r in readings if r.joules is None]
    if missing:
        reason = missing[0].unavailable_reason
        if len(missing) < len(readings):
            reason = f"{len(missing)} of {len(readings)} windows unmeasured: {reason}"
        return PhaseEnergy(None, None, first.source, first.estimated, reason)
    per_device: Dict[str, float] = {}
    for r in readings:
        for dev, j in r.per_device.items():
            per_device[dev] = per_device.get(dev, 0.0) + j
    estimated = any(r.estimated for r in readings)
    return PhaseEnergy(sum(r.joules for r in readings), per_device, first.source, estimated, None)


def _context(phase) -> Dict[str, Any]:
    """The meter's facts every reading carries (counter update period, idle power, ...)."""
    return phase.energy[0].context if phase.energy else {}


def _windows(phase) -> Windows:
    """How long the windows were against the counter's update period, and how short ones were handled."""
    seconds = [r.seconds for r in phase.energy]
    ctx = _context(phase)
    update = ctx.get("counter_update_s")
    return Windows(
        count=len(seconds),
        seconds=sum(seconds),
        shortest_s=min(seconds) if seconds else None,
        counter_update_s=update,
        shorter_than_update=sum(s < update for s in seconds) if update else None,
        short_window_handling=ctx.get("short_window_handling"),
    )


def _per_accepted_token_reason(accepted: Optional[int]) -> Optional[str]:
    if accepted is None:
        return "no speculation (or the engine reports no acceptance counts)"
    if accepted == 0:
        return "no draft token was accepted"
    return None


def _idle_corrected_joules(phase, total: PhaseEnergy, watts: Dict[str, float]) -> Optional[Dict[str, float]]:
    """Raw joules minus idle watts x window seconds, per device."""
    if total.joules is None:
        return None
    seconds = sum(r.seconds for r in phase.energy)
    return {dev: j - watts.get(dev, 0.0) * seconds for dev, j in total.per_device.items()}


def _idle_corrected(speculative, base, accepted: Optional[int]) -> IdleCorrected:
    """The speculative (and baseline) energy with idle power subtracted, when an idle baseline was measured."""
    idle = _context(speculative).get("idle")
    if idle is None:
        return IdleCorrected(unavailable_reason="no idle baseline (energy.idle_seconds=0)")
    if idle.get("watts") is None:
        return IdleCorrected(unavailable_reason=f"idle power unmeasured: {idle.get('unavailable_reason')}")
    total = _phase_energy(speculative)
    per_device = _idle_corrected_joules(speculative, total, idle["watts"])
    joules = sum(per_device.values()) if per_device is not None else None
    joules_per_token = ratio(joules, speculative.output_tokens())
    return IdleCorrected(
        joules=joules,
        per_device=per_device,
        joules_per_token=joules_per_token,
        joules_per_accepted_token=ratio(joules, accepted),
        idle_watts=idle["watts"],
        idle_seconds=idle["seconds"],
        idle_source=idle["source"],
        estimated=total.estimated or idle["estimated"],
        **(_idle_corrected_baseline(base, idle["watts"], joules_per_token) if base is not None else {}),
    )


def _idle_corrected_baseline(base, watts: Dict[str, float], joules_per_token: Optional[float]) -> Dict[str, Any]:
    """The baseline's idle-corrected figures, and the ratio of the idle-corrected energies per token."""
    per_device = _idle_corrected_joules(base, _phase_energy(base), watts)
    joules = sum(per_device.values()) if per_device is not None else None
    baseline_joules_per_token = ratio(joules, base.output_tokens())
    return {
        "baseline_joules": joules,
        "baseline_joules_per_token": baseline_joules_per_token,
        "energy_ratio": ratio(joules_per_token, baseline_joules_per_token),
    }


def _baseline(base, joules_per_token: Optional[float]) -> Dict[str, Any]:
    """The baseline phase's figures, and the speculative/baseline energy-per-token ratio."""
    total = _phase_energy(base)
    baseline_joules_per_token = ratio(total.joules, base.output_tokens())
    return {
        "baseline_joules": total.joules,
        "baseline_per_device": total.per_device,
        "baseline_joules_per_token": baseline_joules_per_token,
        "baseline_windows": _windows(base),
        "energy_ratio": ratio(joules_per_token, baseline_joules_per_token),
        "baseline_unavailable_reason": total.unavailable_reason,
    }


def energy_section(speculative, base, accepted: Optional[int], meter_error: Optional[str] = None) -> Energy:
    """Raw and (when an idle baseline exists) idle-corrected energy; energy_ratio = J/token over baseline J/token.
    meter_error: the meter's failure to close at the end, if any."""
    total = _phase_energy(speculative)
    joules_per_token = ratio(total.joules, speculative.output_tokens())
    return Energy(
        joules=total.joules,
        per_device=total.per_device,
        joules_per_token=joules_per_token,
        joules_per_accepted_token=ratio(total.joules, accepted),
        joules_per_accepted_token_reason=_per_accepted_token_reason(accepted),
        source=total.source,
        estimated=total.estimated,
        unavailable_reason=total.unavailable_reason,
        not_measured=_context(speculative).get("not_measured", {}),
        windows=_windows(speculative),
        idle_corrected=_idle_corrected(speculative, base, accepted),
        meter_error=meter_error,
        **(_baseline(base, joules_per_token) if base is not None else {}),
    )
