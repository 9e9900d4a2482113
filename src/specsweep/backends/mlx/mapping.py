"""Unified config -> mlx-lm `stream_generate` arguments, and acceptance counts from its per-token `from_draft`.

Pure: no mlx, no I/O. Written against mlx-lm 0.32.2 (`mlx_lm/generate.py`: `speculative_generate_step`).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

from specsweep.core import AcceptanceCounts

# Keyword arguments of speculative_generate_step / generate_step that a config may set through backend_overrides.
OVERRIDABLE = ("prefill_step_size", "kv_bits", "kv_group_size", "quantized_kv_start")


def native_config(speculation, generation) -> Dict[str, Any]:
    """{"stream_generate": kwargs, "sampler": make_sampler kwargs, "seed": mx.random seed}."""
    kwargs: Dict[str, Any] = {"max_tokens": generation.max_new_tokens}
    if speculation.method == "draft_model":
        kwargs["num_draft_tokens"] = speculation.num_speculative_tokens
    kwargs.update(speculation.backend_overrides)
    sampler = (
        {"temp": generation.temperature, "top_p": generation.top_p} if generation.temperature > 0 else {"temp": 0.0}
    )
    return {"stream_generate": kwargs, "sampler": sampler, "seed": generation.seed}


class DraftFlagMismatch(RuntimeError):
    """The from_draft sequence cannot come from mlx-lm's speculative loop as this module models it."""


def acceptance_from_flags(from_draft: Iterable[bool], k: int, max_tokens: int) -> AcceptanceCounts:
    """Rebuild per-step (drafted, accepted) from the `from_draft` flag of every generated token, in order.

    mlx-lm's loop, per verification step: draft n = min(k, max_tokens - tokens so far) tokens, verify them in one
    target pass, emit the accepted drafts (from_draft=True), then one target token (from_draft=False) unless
    max_tokens is reached. So:
    - accepted per step is exact (the count of from_draft=True tokens between target tokens);
    - step boundaries are exact (each from_draft=False token closes a step);
    - drafted per step is derived from the rule above (mlx-lm reports no draft count).
    A step still open when the stream ends closed at max_tokens (all n accepted) or at an EOS token; drafts the
    target accepted after an EOS are never emitted, so that last step counts only the accepted drafts up to the EOS.
    """
    counts = AcceptanceCounts()
    produced = accepted = 0
    drafted = None
    for flag in from_draft:
        if drafted is None:
            drafted = min(k, max_tokens - produced)
        produced += 1
        if flag:
            accepted += 1
            if accepted > drafted:
                raise DraftFlagMismatch(
                    f"{accepted} draft tokens accepted in one step after {produced - accepted} tokens, "
                    f"but mlx-lm drafts at most {drafted} there (k={k}, max_tokens={max_tokens})"
                )
        else:
            counts.record_step(drafted, accepted)
            drafted, accepted = None, 0
    if drafted is not None:
        counts.record_step(drafted, accepted)
    return counts
