"""mlx-lm backend: its settings, what it runs, its checks and its mapping. Never imports mlx."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from specsweep.backends.base import BackendConfig, Dtype
from specsweep.backends.mlx import mapping
from specsweep.core import Choice, Problem
from specsweep.models.resolve import ResolvedModels

INSTALL_HINT = "an installed mlx-lm: pip install mlx-lm (on Linux without Apple silicon: pip install 'mlx[cpu]' mlx-lm)"


class MlxDevice(Choice):
    cpu = "cpu"
    gpu = "gpu"  # Metal on Apple silicon


@dataclass
class MlxBackendConfig(BackendConfig):
    """mlx-lm `stream_generate(draft_model=..., num_draft_tokens=k)`: draft-model speculation, one prompt at a time.

    Apple silicon runs it on Metal; on Linux, mlx[cpu] runs it on the CPU (slow: its wheel ships the reference BLAS).
    """

    engine = "specsweep.backends.mlx.backend.MlxBackend"
    distributions = ("mlx", "mlx-lm")
    single_engine_reason = None  # the baseline and the speculative engine share the target weights (session slot)

    name: str = "mlx"
    dtype: Optional[Dtype] = None  # cast weights after loading; null keeps the checkpoint's dtype
    device: Optional[MlxDevice] = None  # null: mlx's default (gpu on Apple silicon, cpu elsewhere)

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return ("none", "draft_model")

    def check(self, cfg) -> List[Problem]:
        speculation = cfg.speculation
        problems = []
        if cfg.generation.batch_size != 1:
            problems.append(
                (
                    "generation.batch_size",
                    cfg.generation.batch_size,
                    "1 on backend=mlx (a draft model disables mlx-lm batching)",
                )
            )
        if speculation.draft_tp_size not in (None, 1):
            problems.append(
                (
                    "speculation.draft_tp_size",
                    speculation.draft_tp_size,
                    "1 or null on backend=mlx (no tensor parallelism)",
                )
            )
        allowed = f"one of {', '.join(mapping.OVERRIDABLE)} (mlx-lm generation arguments)"
        problems += [
            (f"speculation.backend_overrides.{key}", value, allowed)
            for key, value in speculation.backend_overrides.items()
            if key not in mapping.OVERRIDABLE
        ]
        # last: a config's own mistakes are reported on any machine, mlx installed or not (the GPU stack has none)
        if not cfg.dry_run and not installed():
            problems.append(("backend", self.name, INSTALL_HINT))
        return problems

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        return mapping.native_config(cfg.speculation, cfg.generation)


def installed() -> bool:
    """mlx and mlx-lm are importable (found without importing them)."""
    return importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
