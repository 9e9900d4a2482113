"""Unified speculation config -> transformers `generate()` arguments. Pure: no torch, no I/O."""

from __future__ import annotations

from typing import Any, Dict, Optional

# Keys transformers reads from the assistant's generation_config rather than from generate() kwargs.
ASSISTANT_KEYS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
# transformers' own default window for prompt lookup (GenerationConfig.max_matching_ngram_size).
DEFAULT_NGRAM_MAX = 2


def native_config(speculation, generation) -> Dict[str, Any]:
    """Return {"generate_kwargs": ..., "assistant_generation_config": ...} for one run.

    transformers reads k for a draft model from the *assistant's* generation_config, so it travels separately;
    the constant schedule and a zero confidence threshold make k fixed instead of adaptive.
    """
    generate_kwargs: Dict[str, Any] = {"max_new_tokens": generation.max_new_tokens}
    if generation.temperature > 0:
        generate_kwargs.update(do_sample=True, temperature=generation.temperature, top_p=generation.top_p)
    else:
        generate_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    assistant: Dict[str, Any] = {}
    if speculation.method == "ngram":
        generate_kwargs["prompt_lookup_num_tokens"] = speculation.num_speculative_tokens
        generate_kwargs["max_matching_ngram_size"] = speculation.ngram_max or DEFAULT_NGRAM_MAX
    elif speculation.method == "draft_model":
        assistant = {
            "num_assistant_tokens": speculation.num_speculative_tokens,
            "num_assistant_tokens_schedule": "constant",
            "assistant_confidence_threshold": 0.0,
        }
    for key, value in speculation.backend_overrides.items():
        (assistant if key in ASSISTANT_KEYS else generate_kwargs)[key] = value
    native: Dict[str, Any] = {"generate_kwargs": generate_kwargs, "assistant_generation_config": assistant}
    if speculation.synthetic_acceptance is not None:
        native["synthetic_acceptance"] = {
            "alpha": speculation.synthetic_acceptance,
            "seed": generation.seed,
            "how": "a logits processor decides each drafted token at verification: accepted with probability alpha "
            "(the target's logits are replaced by the drafted token), else the target's choice (its runner-up where "
            "that is the drafted token); the draft and target forwards run as usual",
        }
    return native


def loads(target: str, draft: Optional[str], dtype: str, device: str) -> Dict[str, Any]:
    """What the engine loads with AutoModelForCausalLM.from_pretrained, and where (what --dry-run shows)."""
    return {"target": target, "draft": draft, "dtype": dtype, "device": device}
