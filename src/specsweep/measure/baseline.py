"""The no-speculation baseline a job is paired with: its key, its config, the baselines a process keeps for later
jobs with the same key, and how the baseline is paired with the speculative generations (measurement.pairing)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from typing import Any, Dict, Optional, Tuple

from specsweep.results.types import BaselineInfo


def baseline_key(cfg) -> str:
    """Everything a no-speculation measurement depends on; equal keys give interchangeable baselines."""
    parts = {
        "model": cfg.model.target,
        "backend": asdict(cfg.backend),
        "dataset": asdict(cfg.dataset),
        "generation": asdict(cfg.generation),
        "measurement": {"warmup": cfg.measurement.warmup, "repetitions": cfg.measurement.repetitions},
        "energy": asdict(cfg.energy),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def baseline_config(cfg):
    """A copy of the job's config with speculation off (cfg is left as it is)."""
    base = copy.deepcopy(cfg)
    base.speculation.method = "none"
    base.speculation.num_speculative_tokens = None
    base.speculation.draft_model = None
    base.speculation.ngram_min = base.speculation.ngram_max = base.speculation.draft_tp_size = None
    base.speculation.backend_overrides = {}
    return base


def kept_baselines(cfg, session):
    """The session slot of the baseline phases measured in this process, by baseline_key. How many are kept is the
    backend's declaration (`BackendConfig.kept_baselines`): offline, the last one; served, one per load level (a
    sweep such as speculation=none,ngram generation.concurrency=1,4 runs every `none` job first)."""
    capacity = type(cfg.backend).kept_baselines
    return session.slot(f"measure.baselines.{capacity}", capacity=capacity)


def reused(cfg, session):
    """The baseline phase measured earlier in this process with this job's key, or None."""
    return kept_baselines(cfg, session).get(baseline_key(cfg))


def pairing(cfg) -> Tuple[str, str]:
    """How this job pairs its baseline with the speculative generations, and why."""
    blocker = cfg.backend.pairing_blocker()
    if str(cfg.measurement.pairing) == "phased":
        return "phased", "measurement.pairing=phased"
    if blocker:
        return "phased", f"backend={cfg.backend.name}: {blocker}"
    return "interleaved", f"backend={cfg.backend.name} holds the baseline and the speculative engine at once"


REUSED = "reused: measured earlier in this process with the same key"
MEASURED = "measured in this job"
INTERLEAVED = "measured in this job, interleaved with the speculative generations"


def native_differences(cfg, speculative_engine) -> Dict[str, Dict[str, Any]]:
    """Every field where the baseline's native engine config differs from the speculative engine's, as
    {dotted path: {"speculative": value, "baseline": value}} (a section one side lacks is one entry). Greedy outputs
    are compared across the two engines, so anything here besides the speculation settings is a second reason they
    could differ: the record names it (vLLM: the per-request acceptance histogram switch)."""
    plain_cfg = baseline_config(cfg)
    base = plain_cfg.backend.native_config(plain_cfg, speculative_engine.models)
    return {
        path: {"speculative": spec, "baseline": plain}
        for path, spec, plain in _diff(speculative_engine.native, base, "")
    }


def _diff(spec: Any, plain: Any, path: str):
    if isinstance(spec, dict) and isinstance(plain, dict):
        for key in sorted(spec.keys() | plain.keys(), key=str):
            yield from _diff(spec.get(key), plain.get(key), f"{path}.{key}" if path else str(key))
    elif spec != plain:
        yield path, spec, plain


def info(cfg, source: Optional[str], differences: Optional[Dict[str, Any]] = None) -> BaselineInfo:
    """The `baseline` section: no baseline (source None), or where it came from, how it was paired and how its
    engine config differs from the speculative engine's."""
    if source is None:
        return BaselineInfo(measured=False, measured_in_job=False)
    mode, why = pairing(cfg)
    return BaselineInfo(
        measured=True,
        measured_in_job=source != REUSED,
        key=baseline_key(cfg),
        source=source,
        pairing=mode,
        pairing_reason=why,
        native_differences=differences,
    )
