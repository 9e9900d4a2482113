"""Unified config -> vLLM `LLM(**llm_kwargs, speculative_config=...)` and `SamplingParams(**sampling_params)`. Pure."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from specsweep.core import SCHEDULE_OPEN_END, schedule_ranges
from specsweep.methods import method_spec

GIB = 1 << 30


def llm_kwargs(backend, generation, target: str, speculative: bool) -> Dict[str, Any]:
    kwargs: Dict[str, Any] = {
        "model": target,
        "dtype": str(backend.dtype),
        "tensor_parallel_size": backend.tensor_parallel_size,
        "enforce_eager": backend.enforce_eager,
        "enable_prefix_caching": backend.enable_prefix_caching,
        "seed": generation.seed,
        "disable_log_stats": False,  # LLM.get_metrics() (the speculation-decode counters) needs stats on
    }
    if backend.kv_cache_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(backend.kv_cache_gib * GIB)
    else:
        kwargs["gpu_memory_utilization"] = backend.gpu_memory_utilization
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        if getattr(backend, name) is not None:
            kwargs[name] = getattr(backend, name)
    if speculative:
        kwargs["per_request_spec_decode_metrics"] = "summary"  # per-request acceptance histogram
    kwargs.update(backend.engine_overrides)
    return kwargs


def synthetic_rates(alpha: float, k: int) -> List[float]:
    """vLLM's synthetic_acceptance_rates (per position, unconditional: all tokens up to i accepted) for a draft whose
    every token is accepted with probability alpha independently: alpha^i."""
    return [alpha**i for i in range(1, k + 1)]


def speculative_config(speculation, draft: Optional[str]) -> Optional[Dict[str, Any]]:
    """vLLM's speculative_config dict; None without speculation. backend_overrides are merged last, verbatim."""
    if speculation.method == "none":
        return None
    out: Dict[str, Any] = {"method": str(speculation.method)}
    if speculation.num_speculative_tokens is not None:
        out["num_speculative_tokens"] = speculation.num_speculative_tokens
    if method_spec(speculation.method).needs_weights or draft is not None:
        out["model"] = draft
    if speculation.ngram_min is not None:
        out["prompt_lookup_min"] = speculation.ngram_min
    if speculation.ngram_max is not None:
        out["prompt_lookup_max"] = speculation.ngram_max
    if speculation.draft_tp_size is not None:
        out["draft_tensor_parallel_size"] = speculation.draft_tp_size
    if speculation.synthetic_acceptance is not None:  # i.i.d.: position i is reached and accepted w.p. alpha^i
        out["rejection_sample_method"] = "synthetic"
        out["synthetic_acceptance_rates"] = synthetic_rates(
            speculation.synthetic_acceptance, out["num_speculative_tokens"]
        )
    if speculation.k_schedule:  # vLLM caps each entry at num_speculative_tokens (the schedule's largest k)
        ranges = schedule_ranges(speculation.k_schedule, SCHEDULE_OPEN_END)
        out["num_speculative_tokens_per_batch_size"] = [list(r) for r in ranges]
    out.update(speculation.backend_overrides)
    return out


def sampling_params(generation) -> Dict[str, Any]:
    params: Dict[str, Any] = {"max_tokens": generation.max_new_tokens, "temperature": generation.temperature}
    if generation.temperature > 0:
        params.update(top_p=generation.top_p, seed=generation.seed)
    return params


def native_config(cfg, models) -> Dict[str, Any]:
    """{"llm_kwargs", "speculative_config", "sampling_params", "chat_template"} for one run."""
    speculation = speculative_config(cfg.speculation, models.draft)
    return {
        "llm_kwargs": llm_kwargs(cfg.backend, cfg.generation, models.target, speculation is not None),
        "speculative_config": speculation,
        "sampling_params": sampling_params(cfg.generation),
        "chat_template": cfg.generation.chat_template,
    }
