"""The backend registry, built from the backends' declarations (`BackendConfig` subclasses).

Built-in backends are listed below; a backend from another package registers itself with an entry point in the
group `specsweep.backends` that names its declaration class (see docs/extending.md). Only the light declaration
modules are imported, when the registry is first read; an engine module is imported when a run builds it
(`hydra.utils.get_class`).
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import Any, Dict, Tuple, Type

from specsweep.backends.base import Backend, BackendConfig
from specsweep.models.resolve import ResolvedModels

# The built-in declarations, by dotted path: imported when the registry is first read, so importing this package (or
# any module under it) pulls in no backend's module.
BUILTIN: Tuple[str, ...] = (
    "specsweep.backends.pytorch.config.PytorchBackendConfig",
    "specsweep.backends.vllm.config.VllmBackendConfig",
    "specsweep.backends.tensorrt.config.TensorrtBackendConfig",
    "specsweep.backends.mlx.config.MlxBackendConfig",
    "specsweep.backends.llamacpp.config.LlamacppBackendConfig",
    "specsweep.backends.vllm.server_config.VllmServerBackendConfig",
    "specsweep.backends.mlx.server_config.MlxServerBackendConfig",
    "specsweep.backends.llamacpp.server_config.LlamacppServerBackendConfig",
)
ENTRY_POINT_GROUP = "specsweep.backends"


@functools.lru_cache(maxsize=None)
def registry() -> Dict[str, Type[BackendConfig]]:
    """backend name -> declaration class: the built-ins, then every installed plugin."""
    found = {}
    for path in BUILTIN:
        module, name = path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        found[cls.backend_name()] = cls
    for point in entry_points(group=ENTRY_POINT_GROUP):
        cls = point.load()
        if not (isinstance(cls, type) and issubclass(cls, BackendConfig)):
            raise TypeError(f"entry point {point.name} = {point.value} is not a specsweep BackendConfig subclass")
        found[cls.backend_name()] = cls
    return found


def native_config(cfg, models: ResolvedModels) -> Dict[str, Any]:
    """The selected backend's native engine config for this run (pure; what --dry-run prints)."""
    return cfg.backend.native_config(cfg, models)


def build_engine(cfg, models: ResolvedModels, session) -> Backend:
    """Import the selected backend's engine, construct it for this run and load it."""
    from hydra.utils import get_class

    engine = get_class(type(cfg.backend).engine)(cfg, native_config(cfg, models), models, session)
    engine.load()
    return engine


def support_matrix() -> Dict[str, Tuple[str, ...]]:
    return {name: cls.supported_methods() for name, cls in registry().items()}
