"""TensorRT-LLM backend settings, the version the mapping targets, and what it can run. Never imports tensorrt_llm."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from specsweep.backends.base import BackendConfig, DtypeOrAuto
from specsweep.backends.tensorrt import mapping
from specsweep.core import Choice, Problem
from specsweep.fields import bounded
from specsweep.models.resolve import ResolvedModels

INSTALL_HINT = (
    "an installed tensorrt_llm package (it needs Linux with an NVIDIA GPU and CUDA): "
    "pip install tensorrt_llm --extra-index-url https://pypi.nvidia.com; "
    "add --dry-run to print the native config without it"
)


class TrtRuntime(Choice):
    pytorch = "pytorch"  # the LLM API's PyTorch backend: draft_model, eagle3, ngram, mtp
    tensorrt = "tensorrt"  # the TensorRT-engine backend: eagle (EAGLE-1/2), medusa, lookahead


@dataclass
class TensorrtBackendConfig(BackendConfig):
    """TensorRT-LLM LLM API: LLM(model, speculative_config=<XxxDecodingConfig>); NVIDIA GPUs only.

    The decoding-config class and field names follow the installed tensorrt_llm version; without the package
    (e.g. for --dry-run) they follow trtllm_version.
    """

    engine = "specsweep.backends.tensorrt.backend.TensorrtBackend"
    distributions = ("tensorrt_llm", "torch", "transformers")
    single_engine_reason = "one TensorRT-LLM engine at a time (each holds its own weights and KV cache)"
    k_schedule = True  # the decoding config's draft_len_schedule

    name: str = "tensorrt"
    trtllm_version: str = "1.2.1"  # API version mapped when tensorrt_llm is not installed; an installed one wins
    runtime: TrtRuntime = TrtRuntime.pytorch  # the no-speculation baseline runs on the same runtime
    tensor_parallel_size: int = bounded(1, ge=1)  # GPUs per model; the draft always shares the target's mapping
    dtype: DtypeOrAuto = DtypeOrAuto.auto

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return ("none",) + mapping.METHODS_BY_API[mapping.API_12]

    def check(self, cfg) -> List[Problem]:
        return check(cfg)

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        version, source = effective_version(self)
        return mapping.native_config(
            cfg.speculation, cfg.generation, self, models.target, models.draft, version, source
        )


def installed_version() -> Optional[str]:
    """The installed tensorrt_llm version (read from package metadata, nothing imported), or None."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        return None
    try:
        return importlib.metadata.version("tensorrt_llm")
    except importlib.metadata.PackageNotFoundError:
        return None


def effective_version(backend) -> Tuple[str, str]:
    """(version to map for, where it came from): the installed package, else backend.trtllm_version."""
    installed = installed_version()
    if installed:
        return installed, "installed tensorrt_llm"
    return backend.trtllm_version, "backend.trtllm_version (tensorrt_llm is not installed)"


def check(cfg) -> List[Problem]:
    """Version, install, runtime and method rules (cross-field: they depend on the method and the version)."""
    backend, speculation = cfg.backend, cfg.speculation
    version, source = effective_version(backend)
    installed = source.startswith("installed")
    if mapping.api_for(version) is None:
        field = "tensorrt_llm (installed)" if installed else "backend.trtllm_version"
        return [(field, version, f"a TensorRT-LLM version this mapping knows: {mapping.KNOWN_VERSIONS}")]
    if not installed and not cfg.dry_run:
        return [("backend", backend.name, INSTALL_HINT)]
    return _method_problems(speculation, backend, version) + _override_problems(speculation, version)


def _method_problems(speculation, backend, version: str) -> List[Problem]:
    """The runtime, version and field rules that depend on the method."""
    method, problems = speculation.method, []
    needed = mapping.METHOD_RUNTIME.get(method) if method != "none" else None
    if needed is not None and needed != backend.runtime:
        allowed = f"{needed} for speculation.method={method} on TensorRT-LLM"
        problems.append(("backend.runtime", backend.runtime, allowed))
    api = mapping.api_for(version)
    if method != "none" and method not in mapping.METHODS_BY_API[api]:
        allowed = (
            f"a method TensorRT-LLM {version} maps: {', '.join(mapping.METHODS_BY_API[api])} (EAGLE-1/2 needs 1.2.x)"
        )
        problems.append(("speculation.method", method, allowed))
    if speculation.draft_tp_size not in (None, backend.tensor_parallel_size):
        allowed = (
            f"null or {backend.tensor_parallel_size} (backend.tensor_parallel_size): "
            "TensorRT-LLM's draft shares the target's mapping"
        )
        problems.append(("speculation.draft_tp_size", speculation.draft_tp_size, allowed))
    if method == "ngram" and speculation.ngram_min not in (None, 1):
        allowed = "1 or null on backend=tensorrt (TensorRT-LLM has no minimum n-gram size)"
        problems.append(("speculation.ngram_min", speculation.ngram_min, allowed))
    return problems


def _override_problems(speculation, version: str) -> list[tuple[str, object, str]]:
    if not speculation.backend_overrides:
        return []
    if speculation.method == "none":
        return [
            ("speculation.backend_overrides", dict(speculation.backend_overrides), "empty when speculation.method=none")
        ]
    found = mapping.class_for(speculation.method, version)
    if found is None:
        return []  # the method itself is already reported
    known = mapping.fields(found[0], version)
    return [
        (
            f"speculation.backend_overrides.{key}",
            value,
            f"a field of {found[0]} in TensorRT-LLM {version}: {', '.join(sorted(known))}",
        )
        for key, value in speculation.backend_overrides.items()
        if key not in known
    ]
