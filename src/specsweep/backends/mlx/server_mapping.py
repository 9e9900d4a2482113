"""Unified config -> the `mlx_lm.server` command line and the request body of backend=mlx_server. Pure.

k is not on the command line: `--num-draft-tokens` is only the default for requests that carry none, and every
request here carries `num_draft_tokens`, so the server command is the same for every k and one server serves them all.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List

from specsweep.backends.served_config import external_url
from specsweep.serving import openai
from specsweep.serving.server import PORT

# Flags specsweep sets itself -> where to set them instead.
MANAGED_FLAGS = {
    "--port": "nothing: specsweep picks a free loopback port",
    "--host": "nothing: specsweep serves on 127.0.0.1 (backend.url measures a server elsewhere)",
    "--model": "model.target",
    "--draft-model": "speculation.draft_model / model.draft",
    "--num-draft-tokens": "speculation.num_speculative_tokens (sent with every request)",
    "--prompt-cache-size": "backend.prompt_cache",
}


def executable() -> str:
    """`mlx_lm.server` of this interpreter's environment."""
    return str(Path(sys.executable).with_name("mlx_lm.server"))


def server_command(cfg, models) -> List[str]:
    command = [executable(), "--model", models.target, "--host", "127.0.0.1", "--port", PORT, "--log-level", "INFO"]
    if not cfg.backend.prompt_cache:
        command += ["--prompt-cache-size", "0"]
    if cfg.speculation.method == "draft_model":
        command += ["--draft-model", models.draft]
    return command + [str(arg) for arg in cfg.backend.extra_args]


def request(cfg) -> Dict[str, Any]:
    params = openai.sampling(cfg.generation)
    if cfg.speculation.method == "draft_model":
        params["num_draft_tokens"] = cfg.speculation.num_speculative_tokens
    return params


def native_config(cfg, models) -> Dict[str, Any]:
    """{"server_command" (null with backend.url), "server_command_line", "url", "endpoint", "request", "load"}."""
    url = external_url(cfg)
    command = None if url else server_command(cfg, models)
    return {
        "server_command": command,
        "server_command_line": shlex.join(command) if command else f"(none: the server at {url} is measured)",
        "url": url,
        "endpoint": openai.endpoint(cfg.generation),
        "request": request(cfg),
        "load": {"concurrency": cfg.generation.concurrency, "request_rate": cfg.generation.request_rate},
    }
