"""Unified config -> backend=llamacpp_server's server command line, endpoint and request body. Pure (no xllamacpp,
no I/O).

The server is llama.cpp's own (`xllamacpp.Server`) in a process of its own (`python -m
specsweep.backends.llamacpp.serve`), given the offline backend's CommonParams mapping (`mapping.native_config`) as
JSON, with what a server under load changes: `n_parallel` = generation.concurrency slots, each with backend.n_ctx
tokens of context of its own (`n_ctx` = backend.n_ctx x slots, `kv_unified=false`). Every request carries the
offline backend's request fields (greedy as top_k=1, cache_prompt=false). The port is a placeholder until a free one is
picked at start.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any, Dict, List, Optional

from specsweep.backends.llamacpp import mapping
from specsweep.backends.served_config import external_url
from specsweep.serving import openai
from specsweep.serving.server import PORT

SERVE_MODULE = "specsweep.backends.llamacpp.serve"
HOST = "127.0.0.1"

# Flags specsweep sets itself -> where to set them instead. backend.extra_args are `--<CommonParams field>=<value>`
# (any other field of xllamacpp.CommonParams, e.g. --flash_attn_type=...), set after the mapping's.
MANAGED_FLAGS = {
    "--params": "nothing: specsweep writes the CommonParams from the config",
    "--port": "nothing: specsweep picks a free loopback port",
    "--host": "nothing: specsweep serves on 127.0.0.1 (backend.url measures a server elsewhere)",
    "--hostnames": "nothing: specsweep serves on 127.0.0.1 (backend.url measures a server elsewhere)",
    "--model.path": "model.target",
    "--n_parallel": "generation.concurrency (one slot per request in flight)",
    "--n_ctx": "backend.n_ctx (per slot)",
    "--kv_unified": "nothing: each slot has backend.n_ctx tokens of its own",
    "--n_batch": "backend.n_batch",
    "--n_gpu_layers": "backend.n_gpu_layers",
    "--cpuparams.n_threads": "backend.num_threads",
    "--cpuparams_batch.n_threads": "backend.num_threads",
    "--cache_prompt": "nothing: every request prefills its whole prompt, as on the other backends",
    "--cache_ram_mib": "nothing: every request prefills its whole prompt, as on the other backends",
    "--endpoint_metrics": "nothing: acceptance is read from the server's /metrics, so it stays on",
    "--load_mtp": "speculation=mtp",
}
# Whole families of fields specsweep sets: refused in extra_args by their prefix.
MANAGED_PREFIXES = {
    "--speculative.": "speculation.* (llama.cpp's own draft fields: speculation.backend_overrides)",
    "--sampling.": "generation.* (every request carries its sampling settings)",
}


def managed_prefix_problems(extra_args: List[str]) -> List[tuple]:
    """Extra arguments that would set a field of a family specsweep maps (speculative.*, sampling.*)."""
    problems = []
    for arg in extra_args:
        flag = str(arg).split("=")[0]
        for prefix, instead in MANAGED_PREFIXES.items():
            if flag.startswith(prefix):
                problems.append(("backend.extra_args", arg, f"no {prefix}*: use {instead}"))
    return problems


def server_params(cfg, target: str, draft: Optional[str], cores: int) -> Dict[str, Any]:
    """The offline mapping's CommonParams fields, with one slot per request in flight, each its own context."""
    params = mapping.native_config(cfg, target, draft, cores)["params"]
    slots = cfg.generation.concurrency
    params.update({"n_parallel": slots, "n_ctx": cfg.backend.n_ctx * slots, "kv_unified": False})
    return params


def server_command(params: Dict[str, Any], extra_args: List[str]) -> List[str]:
    """The serve module in this interpreter (the venv validation checked xllamacpp in)."""
    command = [sys.executable, "-m", SERVE_MODULE, "--host", HOST, "--port", PORT]
    return command + ["--params", json.dumps(params, sort_keys=True)] + [str(arg) for arg in extra_args]


def native_config(cfg, models, cores: int) -> Dict[str, Any]:
    """{"server_command" (null with backend.url), "server_command_line", "params" (CommonParams fields; null with
    backend.url), "env" (set in the server's environment), "url", "endpoint", "request", "load"}: the server specsweep
    starts and what every request sends."""
    url = external_url(cfg)
    method = str(cfg.speculation.method)
    draft = models.draft if method in mapping.DRAFT_TYPES else None
    params = None if url else server_params(cfg, models.target, draft, cores)
    command = None if url else server_command(params, cfg.backend.extra_args)
    return {
        "server_command": command,
        "server_command_line": shlex.join(command) if command else f"(none: the server at {url} is measured)",
        "params": params,
        "env": None if url else mapping.engine_env(cfg.backend),
        "url": url,
        "endpoint": openai.endpoint(cfg.generation),
        "request": mapping.request(cfg.generation),
        "load": {"concurrency": cfg.generation.concurrency, "request_rate": cfg.generation.request_rate},
    }
