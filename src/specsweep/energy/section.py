"""The `energy` section of result.json, from the per-window readings of the speculative and baseline phases.

A phase is anything with `.energy` (its EnergyReadings, one per timed generate call) and `.output_tokens()`.
Unknown values are None with a reason, never 0.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


def _ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    return num / den if num is not None and den else None


def _total(phase) -> Dict[str, Any]:
    readings = phase.energy
    if not readings:
        return {"joules": None, "unavailable_reason": "no measurement window", "source": None, "estimated": False}
    first = readings[0]
    missing = [r for r in readings if r.joules is None]
    if missing:
        reason = missing[0].unavailable_reason
        if len(missing) < len(readings):
            reason = f"{len(missing)} of {len(readings)} windows unmeasured: {reason}"
        return {"joules": None, "unavailable_reason": reason, "source": first.source, "estimated": first.estimated}
    per_device: Dict[str, float] = {}
    for r in readings:
        for dev, j in r.per_device.items():
            per_device[dev] = per_device.get(dev, 0.0) + j
    return {
        "joules": sum(r.joules for r in readings),
        "per_device": per_device,
        "source": first.source,
        "estimated": any(r.estimated for r in readings),
        "unavailable_reason": None,
    }


def _windows(phase) -> Dict[str, Any]:
    """How long the windows were against the counter's update period, and how short ones were handled."""
    readings = phase.energy
    seconds = [r.seconds for r in readings]
    ctx = readings[0].context if readings else {}
    update = ctx.get("counter_update_s")
    return {
        "count": len(seconds),
        "seconds": sum(seconds),
        "shortest_s": min(seconds) if seconds else None,
        "counter_update_s": update,
        "shorter_than_update": sum(s < update for s in seconds) if update else None,
        "short_window_handling": ctx.get("short_window_handling"),
    }


def _idle_corrected(phase, total: Dict[str, Any], watts: Dict[str, float]) -> Optional[Dict[str, float]]:
    """Raw joules minus idle watts x window seconds, per device."""
    if total["joules"] is None:
        return None
    seconds = sum(r.seconds for r in phase.energy)
    return {dev: j - watts.get(dev, 0.0) * seconds for dev, j in total["per_device"].items()}


def energy_section(spec, base, accepted: Optional[int]) -> Dict[str, Any]:
    """Raw and (when an idle baseline exists) idle-corrected energy; energy_ratio = spec J/token / baseline J/token."""
    t = _total(spec)
    tokens = spec.output_tokens()
    ctx = spec.energy[0].context if spec.energy else {}
    out: Dict[str, Any] = {
        "joules": t["joules"],
        "per_device": t.get("per_device"),
        "joules_per_token": _ratio(t["joules"], tokens),
        "joules_per_accepted_token": _ratio(t["joules"], accepted),
        "source": t["source"],
        "estimated": t["estimated"],
        "unavailable_reason": t["unavailable_reason"],
        "not_measured": ctx.get("not_measured", {}),
        "windows": _windows(spec),
    }
    if accepted is None:
        out["joules_per_accepted_token_reason"] = "no speculation (or the engine reports no acceptance counts)"
    elif accepted == 0:
        out["joules_per_accepted_token_reason"] = "no draft token was accepted"
    b = _total(base) if base is not None else None
    if b is not None:
        out["baseline_joules"] = b["joules"]
        out["baseline_per_device"] = b.get("per_device")
        out["baseline_joules_per_token"] = _ratio(b["joules"], base.output_tokens())
        out["baseline_windows"] = _windows(base)
        out["energy_ratio"] = _ratio(out["joules_per_token"], out["baseline_joules_per_token"])
        if b["joules"] is None:
            out["baseline_unavailable_reason"] = b["unavailable_reason"]
    idle = ctx.get("idle")
    if idle is None:
        out["idle_corrected"] = {"joules": None, "unavailable_reason": "no idle baseline (energy.idle_seconds=0)"}
    elif idle.get("watts") is None:
        out["idle_corrected"] = {"joules": None, "unavailable_reason": f"idle power unmeasured: {idle.get('unavailable_reason')}"}
    else:
        per_device = _idle_corrected(spec, t, idle["watts"])
        joules = sum(per_device.values()) if per_device is not None else None
        corrected: Dict[str, Any] = {
            "joules": joules,
            "per_device": per_device,
            "joules_per_token": _ratio(joules, tokens),
            "joules_per_accepted_token": _ratio(joules, accepted),
            "idle_watts": idle["watts"],
            "idle_seconds": idle["seconds"],
            "idle_source": idle["source"],
            "estimated": t["estimated"] or idle["estimated"],
        }
        if b is not None:
            base_devices = _idle_corrected(base, b, idle["watts"])
            corrected["baseline_joules"] = sum(base_devices.values()) if base_devices is not None else None
            corrected["baseline_joules_per_token"] = _ratio(corrected["baseline_joules"], base.output_tokens())
            corrected["energy_ratio"] = _ratio(corrected["joules_per_token"], corrected["baseline_joules_per_token"])
        out["idle_corrected"] = corrected
    return out
