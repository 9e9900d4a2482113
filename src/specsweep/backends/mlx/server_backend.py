"""backend=mlx_server's engine: `mlx_lm.server` as a managed server (specsweep.serving).

mlx_lm.server streams text only (no token ids, no draft flags, no metrics endpoint): output ids are the streamed text
re-encoded with the target's tokenizer (for the lossless check), the token count is the server's own (usage), and
acceptance is null with the reason.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Dict, List, Optional

from specsweep.backends.served import ServedBackend
from specsweep.core import Prompt
from specsweep.serving import openai
from specsweep.serving.loadgen import Record
from specsweep.serving.server import ServerSpec

NO_ACCEPTANCE = (
    "mlx_lm.server reports no acceptance: it has no metrics endpoint and its stream carries neither token ids nor "
    "draft flags (backend=mlx counts acceptance offline)"
)


def _version(dist: str) -> Optional[str]:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


class MlxServerBackend(ServedBackend):
    name = "mlx_server"
    acceptance_reason = NO_ACCEPTANCE

    def server_spec(self) -> ServerSpec:
        return ServerSpec(
            name="mlx_lm.server",
            command=self.native["server_command"],
            health_path="/health",
            # it loads the model (and the draft) on the first request: make that part of the start
            ready_request=("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
            startup_timeout_s=self.settings.startup_timeout_s,
            log_dir=self.settings.log_dir,
        )

    def load(self) -> None:
        from transformers import AutoTokenizer

        super().load()
        self.tokenizer = AutoTokenizer.from_pretrained(self.models.target)

    def request_body(self, prompt: Prompt) -> Dict[str, Any]:
        # no "model": mlx_lm.server then answers with the model it was started with
        return {**self.native["request"], **openai.prompt_fields(self.native["endpoint"], prompt.text)}

    def output_ids(self, record: Record) -> List[int]:
        return list(self.tokenizer.encode(record.text, add_special_tokens=False))

    def _model_id(self) -> Optional[str]:
        return None  # its /v1/models lists the HF cache, not the model it serves

    def environment(self) -> Dict[str, Any]:
        return {
            "engine": "mlx_lm.server",
            "mlx_lm": _version("mlx-lm"),
            "mlx": _version("mlx"),
            **self.server_facts(),
            "output_ids": "the streamed text re-encoded with the target's tokenizer (the count is the server's)",
            "machine": platform.machine(),
        }
