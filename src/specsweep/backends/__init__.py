"""The backend registry, built from the backends' declarations (`BackendConfig` subclasses).

Built-in backends are listed below; a backend from another package registers itself with an entry point in the
group `specsweep.backends` that names its declaration class (see docs/extending.md). Only the light declaration
modules are imported here; an engine module is imported when a run builds it (`hydra.utils.get_class`).
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any, Dict, Tuple, Type

from specsweep.backends.base import Backend, BackendConfig, ResolvedModels
from specsweep.backends.mlx.config import MlxBackendConfig
from specsweep.backends.mlx.server_config import MlxServerBackendConfig
from specsweep.backends.pytorch.config import PytorchBackendConfig
from specsweep.backends.tensorrt.config import TensorrtBackendConfig
from specsweep.backends.vllm.config import VllmBackendConfig
from specsweep.backends.vllm.server_config import VllmServerBackendConfig

BUILTIN: Tuple[Type[BackendConfig], ...] = (
    PytorchBackendConfig,
    VllmBackendConfig,
    TensorrtBackendConfig,
    MlxBackendConfig,
    VllmServerBackendConfig,
    MlxServerBackendConfig,
)
ENTRY_POINT_GROUP = "specsweep.backends"


@functools.lru_cache(maxsize=None)
def registry() -> Dict[str, Type[BackendConfig]]:
    """backend name -> declaration class: the built-ins, then every installed plugin."""
    found = {cls.backend_name(): cls for cls in BUILTIN}
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
