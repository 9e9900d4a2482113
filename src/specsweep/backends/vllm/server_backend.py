"""backend=vllm_server's engine: `vllm serve` as a managed server (specsweep.serving), acceptance from its
Prometheus spec-decode counters, differenced around each measurement window."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, Optional

from specsweep.backends.served import ServedBackend
from specsweep.backends.vllm.backend import ENGINE_ENV_PREFIXES, worker_env
from specsweep.backends.vllm.config import installed
from specsweep.backends.vllm.counters import VLLM_COUNTERS
from specsweep.core import AcceptanceCounts, Prompt
from specsweep.serving import openai
from specsweep.serving.prometheus import NoCounters, read_counters
from specsweep.serving.server import ServerError, ServerSpec


def server_env() -> Dict[str, str]:
    """What the server's environment adds to ours: the offline worker's cache dirs (under the specsweep cache unless
    set), but vLLM's own engine-core process (a server needs it) and INFO logging (its log is what a failed start
    quotes). The engine-shaping variables we inherit (VLLM_*, CUDA_*, OMP_*, HF_*) are listed too: they are part of
    what makes two servers interchangeable (ServerSpec.key)."""
    env = {k: v for k, v in worker_env().items() if os.environ.get(k) != v or k.startswith(ENGINE_ENV_PREFIXES)}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    env.pop("PYTHONPATH", None)  # `vllm serve` imports nothing of ours
    if "VLLM_LOGGING_LEVEL" not in os.environ:
        env["VLLM_LOGGING_LEVEL"] = "INFO"
    return env


class VllmServerBackend(ServedBackend):
    name = "vllm_server"
    acceptance_reason = None
    acceptance_source = (
        "the server's Prometheus /metrics: vllm:spec_decode_* counters, read before and after each measurement "
        "window and differenced"
    )

    def server_spec(self) -> ServerSpec:
        return ServerSpec(
            name="vLLM server",
            command=self.native["server_command"],
            env=server_env(),
            health_path="/health",
            startup_timeout_s=self.settings.startup_timeout_s,
            log_dir=self.settings.log_dir,
        )

    def load(self) -> None:
        super().load()
        if self.method != "none" and self.read_acceptance() is None:
            raise self._failure(
                "exposes no vllm:spec_decode_* counters on /metrics: is it serving with --speculative-config?"
            )

    def request_body(self, prompt: Prompt) -> Dict[str, Any]:
        body = {**self.native["request"], **openai.prompt_fields(self.native["endpoint"], prompt.text)}
        return {**body, "model": self.model_id} if self.model_id else body

    def read_acceptance(self) -> Optional[AcceptanceCounts]:
        if self.method == "none":
            return None
        try:
            return read_counters(self.url, VLLM_COUNTERS)
        except NoCounters:
            return None
        except Exception as err:
            raise ServerError(f"could not read {self.url}/metrics: {type(err).__name__}: {err}") from None

    def environment(self) -> Dict[str, Any]:
        dist = installed()
        return {
            "engine": "vllm serve",
            "vllm": dist[1] if dist else None,
            "vllm_distribution": dist[0] if dist else None,
            **self.server_facts(),
            # what specsweep started the server with (unknown for a server at backend.url)
            "dtype": str(self.settings.dtype) if self.server is not None else None,
            "kv_cache_gib": self.settings.kv_cache_gib if self.server is not None else None,
            "machine": platform.machine(),
        }
