"""What a result depends on beyond its config, so an earlier result is reused only while all of it still holds.

The config hash covers the settings; this covers what the settings point at and run on: the prompt file's content,
specsweep's and the engine stack's versions, the weights on disk, the host and accelerator, and the thread and
device environment. Everything here is cheap to read (no weights are hashed: a model directory is identified by its
files' names, sizes and modification times; a packaged model by the sha256s recorded when it was converted).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List

# Distributions whose version changes what any run measures (the energy meters); each backend's declaration names its
# own engine's (`BackendConfig.distributions`). Absent ones are recorded as null.
METERS = ("zeus", "codecarbon")
# Environment variables that change threads or devices.
ENVIRONMENT = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "VLLM_CPU_KVCACHE_SPACE",
)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _dataset_content(cfg) -> str:
    from importlib import resources

    if str(cfg.dataset.name) == "builtin":
        return _sha256_text(resources.files("specsweep.data").joinpath("builtin.jsonl").read_text(encoding="utf-8"))
    return hashlib.sha256(Path(cfg.dataset.path).expanduser().read_bytes()).hexdigest()[:16]


def _weights(reference: str) -> str:
    """A packaged model: its conversion stamp; a local directory: its files' names, sizes and mtimes; a hub id as is
    (its revision cannot be read offline)."""
    from specsweep.models import packaged
    from specsweep.models.resolve import resolve

    path = Path(resolve(reference, prepare=False))
    stamp = path / packaged.STAMP
    if stamp.is_file():
        return _sha256_text(stamp.read_text())
    if path.is_dir():
        files = sorted(
            (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")
            if p.is_file()
        )
        return _sha256_text(json.dumps(files))
    return f"hub:{reference}"


def _models(cfg) -> List[str]:
    from specsweep.models.resolve import draft_reference

    draft = draft_reference(cfg)
    return [cfg.model.target] + ([draft] if draft else [])


def _stack(cfg) -> Dict[str, Any]:
    """The installed versions of the selected backend's engine (as its declaration names them) and of the meters."""
    from specsweep.backends import registry

    declared = registry()[cfg.backend.name].distributions
    return {dist: _version(dist) for dist in (*declared, *METERS)}


def validity_parts(cfg) -> Dict[str, Any]:
    import specsweep

    return {
        "specsweep": specsweep.__version__,
        "dataset_sha256": _dataset_content(cfg),
        "stack": _stack(cfg),
        "weights": {ref: _weights(ref) for ref in _models(cfg)},
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
    }


def validity(cfg) -> Dict[str, Any]:
    """{"key": hash of the parts, "parts": {...}}: stored in result.json and required to match for reuse."""
    parts = validity_parts(cfg)
    return {"key": _sha256_text(json.dumps(parts, sort_keys=True, default=str)), "parts": parts}


def changed(stored: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """Which parts differ (dotted names), for the one line that says why a job is measured again."""
    old, new = (stored or {}).get("parts") or {}, current["parts"]
    out = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{name}.{key}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
        elif a != b:
            out.append(name)
    return out or ["validity key"]
