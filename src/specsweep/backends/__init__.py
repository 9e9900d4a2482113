"""The backend registry: config class, supported methods, checks and engine factory per backend.

Only light modules are imported here (config and pure mapping); an engine module is imported when it is built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from specsweep.backends.pytorch import config as pytorch_config
from specsweep.backends.pytorch import mapping as pytorch_mapping
from specsweep.backends.tensorrt import config as tensorrt_config
from specsweep.backends.tensorrt import mapping as tensorrt_mapping
from specsweep.backends.mlx import config as mlx_config
from specsweep.backends.mlx import mapping as mlx_mapping
from specsweep.backends.vllm import config as vllm_config
from specsweep.backends.vllm import mapping as vllm_mapping


@dataclass(frozen=True)
class BackendEntry:
    config_class: type
    supported_methods: Callable[[], tuple]
    check: Callable[[Any], list]  # cfg -> [(field, value, allowed)]
    native_config: Callable[[Any, Any], dict]  # (cfg, ResolvedModels) -> the engine's native settings (pure)
    engine: str  # "module:Class" of the engine, imported only when built; constructed as Class(cfg, native, models)


BACKENDS = {
    "pytorch": BackendEntry(
        config_class=pytorch_config.PytorchBackendConfig,
        supported_methods=pytorch_config.supported_methods,
        check=pytorch_config.check,
        native_config=lambda cfg, models: pytorch_mapping.native_config(cfg.speculation, cfg.generation),
        engine="specsweep.backends.pytorch.backend:PytorchBackend",
    ),
    "tensorrt": BackendEntry(
        config_class=tensorrt_config.TensorrtBackendConfig,
        supported_methods=tensorrt_config.supported_methods,
        check=tensorrt_config.check,
        native_config=lambda cfg, models: tensorrt_mapping.native_config(
            cfg.speculation, cfg.generation, cfg.backend, models.target, models.draft,
            *tensorrt_config.effective_version(cfg.backend),
        ),
        engine="specsweep.backends.tensorrt.backend:TensorrtBackend",
    ),
    "mlx": BackendEntry(
        config_class=mlx_config.MlxBackendConfig,
        supported_methods=mlx_config.supported_methods,
        check=mlx_config.check,
        native_config=lambda cfg, models: mlx_mapping.native_config(cfg.speculation, cfg.generation),
        engine="specsweep.backends.mlx.backend:MlxBackend",
    ),
    "vllm": BackendEntry(
        config_class=vllm_config.VllmBackendConfig,
        supported_methods=vllm_config.supported_methods,
        check=vllm_config.check,
        native_config=vllm_mapping.native_config,
        engine="specsweep.backends.vllm.backend:VllmBackend",
    ),
}


def engine_class(name: str):
    module, cls = BACKENDS[name].engine.split(":")
    return getattr(importlib.import_module(module), cls)


def support_matrix() -> dict[str, tuple]:
    return {name: entry.supported_methods() for name, entry in BACKENDS.items()}
