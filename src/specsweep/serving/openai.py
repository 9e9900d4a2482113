"""The OpenAI-API request every served backend sends, from the unified generation settings. Pure."""

from __future__ import annotations

from typing import Any, Dict

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def endpoint(generation) -> str:
    """Chat completions apply the server's chat template to one user turn, as generation.chat_template does offline;
    plain completions send the prompt text as it is."""
    return CHAT if generation.chat_template else COMPLETIONS


def sampling(generation) -> Dict[str, Any]:
    """max_tokens and the sampling settings; temperature 0 is greedy (no top_p, no seed)."""
    params: Dict[str, Any] = {"max_tokens": generation.max_new_tokens, "temperature": generation.temperature}
    if generation.temperature > 0:
        params.update(top_p=generation.top_p, seed=generation.seed)
    return params


def prompt_fields(path: str, text: str) -> Dict[str, Any]:
    """The body fields that carry the prompt at this endpoint."""
    return {"messages": [{"role": "user", "content": text}]} if path == CHAT else {"prompt": text}
