"""mlx-lm backend settings and what it can run. Never imports mlx."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Optional

from specsweep.backends.mlx import mapping
from specsweep.config.schema import BackendConfig

SUPPORTED_METHODS = ("none", "draft_model")
DTYPES = ("bfloat16", "float16", "float32")
DEVICES = ("cpu", "gpu")
INSTALL_HINT = "an installed mlx-lm: pip install mlx-lm (on Linux without Apple silicon: pip install 'mlx[cpu]' mlx-lm)"


@dataclass
class MlxBackendConfig(BackendConfig):
    """mlx-lm `stream_generate(draft_model=..., num_draft_tokens=k)`: draft-model speculation, one prompt at a time."""

    name: str = "mlx"
    dtype: Optional[str] = None  # cast weights after loading: bfloat16 | float16 | float32; null keeps the checkpoint's
    device: Optional[str] = None  # cpu | gpu (Metal); null: mlx's default (gpu on Apple silicon, cpu elsewhere)


def installed() -> bool:
    """mlx and mlx-lm are importable (found without importing them)."""
    return importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None


def supported_methods() -> tuple[str, ...]:
    return SUPPORTED_METHODS


def check(cfg) -> list[tuple[str, object, str]]:
    """Backend-specific rules: (field, value, what is allowed) for each violation."""
    backend, spec = cfg.backend, cfg.speculation
    if not cfg.dry_run and not installed():
        return [("backend", backend.name, INSTALL_HINT)]
    problems = []
    if backend.dtype is not None and backend.dtype not in DTYPES:
        problems.append(("backend.dtype", backend.dtype, f"one of {', '.join(DTYPES)}, or null for the checkpoint's dtype"))
    if backend.device is not None and backend.device not in DEVICES:
        problems.append(("backend.device", backend.device, f"one of {', '.join(DEVICES)}, or null for mlx's default"))
    if cfg.generation.batch_size != 1:
        problems.append(("generation.batch_size", cfg.generation.batch_size, "1 on backend=mlx (a draft model disables mlx-lm batching)"))
    if spec.draft_tp_size not in (None, 1):
        problems.append(("speculation.draft_tp_size", spec.draft_tp_size, "1 or null on backend=mlx (no tensor parallelism)"))
    for key, value in spec.backend_overrides.items():
        if key not in mapping.OVERRIDABLE:
            problems.append((f"speculation.backend_overrides.{key}", value, f"one of {', '.join(mapping.OVERRIDABLE)} (mlx-lm generation arguments)"))
    return problems
