"""Unified speculation config -> TensorRT-LLM LLM API arguments. Pure: no tensorrt_llm, no I/O.

Sources (see docs/tensorrt.md, "Where the mapping comes from"): TensorRT-LLM 1.2.1 `llmapi/llm_args.py` for the
"1.2" API; the 1.3.0rc27, 1.3.0rc29 and 1.4.0rc1 API reference pages for the "1.3" API. The class is chosen by
the version: EAGLE-3 is `EagleDecodingConfig(eagle3_one_model=True)` in 1.2.x and `Eagle3DecodingConfig` from 1.3.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, Optional, Tuple

from packaging.version import InvalidVersion, Version

from specsweep.core import SCHEDULE_OPEN_END, schedule_ranges

API_12 = "1.2"  # TensorRT-LLM 1.2.x, mapped from the 1.2.1 source
API_13 = "1.3"  # TensorRT-LLM >= 1.3.0rc27, mapped from the 1.3.0rc27 / 1.3.0rc29 / 1.4.0rc1 API pages
KNOWN_VERSIONS = "1.2.x (1.2.1 API) or >= 1.3.0rc27 (1.3.0rc27-1.4.0rc1 API)"

# TensorRT-LLM runtimes: the LLM API's PyTorch backend, or the TensorRT-engine backend (backend.runtime; the
# no-speculation baseline runs on the same one). Each method runs on one of them.
RUNTIMES = ("pytorch", "tensorrt")
LLM_IMPORT = {"pytorch": "tensorrt_llm.LLM", "tensorrt": "tensorrt_llm._tensorrt_engine.LLM"}
METHOD_RUNTIME = {
    "draft_model": "pytorch",
    "eagle3": "pytorch",  # the PyTorch backend's Eagle is EAGLE-3 only
    "ngram": "pytorch",
    "mtp": "pytorch",
    "eagle": "tensorrt",  # EAGLE-1/2 checkpoints run on the TensorRT-engine backend (1.2.x)
    "medusa": "tensorrt",
    "lookahead": "tensorrt",
}
METHODS_BY_API = {
    API_12: ("draft_model", "eagle", "eagle3", "ngram", "mtp", "medusa", "lookahead"),
    # From 1.3 `Eagle` is an alias of Eagle3 and EAGLE-1/2 checkpoints do not work.
    API_13: ("draft_model", "eagle3", "ngram", "mtp", "medusa", "lookahead"),
}

# method -> (class name, trtllm-serve YAML decoding_type), per API generation.
CLASSES = {
    API_12: {
        "draft_model": ("DraftTargetDecodingConfig", "DraftTarget"),
        "eagle": ("EagleDecodingConfig", "Eagle"),
        "eagle3": ("EagleDecodingConfig", "Eagle"),
        "ngram": ("NGramDecodingConfig", "NGram"),
        "mtp": ("MTPDecodingConfig", "MTP"),
        "medusa": ("MedusaDecodingConfig", "Medusa"),
        "lookahead": ("LookaheadDecodingConfig", "Lookahead"),
    },
    API_13: {
        "draft_model": ("DraftTargetDecodingConfig", "DraftTarget"),
        "eagle3": ("Eagle3DecodingConfig", "Eagle3"),
        "ngram": ("NGramDecodingConfig", "NGram"),
        "mtp": ("MTPDecodingConfig", "MTP"),
        "medusa": ("MedusaDecodingConfig", "Medusa"),
        "lookahead": ("LookaheadDecodingConfig", "Lookahead"),
    },
}

# Constructor fields each class accepts (the classes are StrictBaseModel: anything else is rejected).
_BASE = {
    API_12: (
        "max_draft_len",
        "max_total_draft_tokens",
        "speculative_model",
        "speculative_model_dir",
        "max_concurrency",
        "draft_len_schedule",
        "load_format",
        "acceptance_window",
        "acceptance_length_threshold",
        "allow_advanced_sampling",
    ),
    API_13: (
        "max_draft_len",
        "max_total_draft_tokens",
        "speculative_model",
        "speculative_model_dir",
        "max_concurrency",
        "draft_len_schedule",
        "load_format",
        "acceptance_rate_window_size",
        "acceptance_rate_threshold",
        "use_rejection_sampling",
        "allow_advanced_sampling",
        "advanced_sampling_mode",
        "enable_penalty",
        "moe_backend",
    ),
}
_OWN = {
    API_12: {
        "DraftTargetDecodingConfig": (),
        "EagleDecodingConfig": (
            "eagle_choices",
            "greedy_sampling",
            "posterior_threshold",
            "use_dynamic_tree",
            "dynamic_tree_max_topK",
            "num_eagle_layers",
            "max_non_leaves_per_layer",
            "eagle3_one_model",
            "eagle3_layers_to_capture",
            "eagle3_model_arch",
        ),
        "NGramDecodingConfig": ("max_matching_ngram_size", "is_keep_all", "is_use_oldest", "is_public_pool"),
        "MTPDecodingConfig": (
            "num_nextn_predict_layers",
            "use_relaxed_acceptance_for_thinking",
            "relaxed_topk",
            "relaxed_delta",
            "use_mtp_vanilla",
            "mtp_eagle_one_model",
            "num_nextn_predict_layers_from_model_config",
            "begin_thinking_phase_token",
            "end_thinking_phase_token",
        ),
        "MedusaDecodingConfig": ("medusa_choices", "num_medusa_heads"),
        "LookaheadDecodingConfig": ("max_window_size", "max_ngram_size", "max_verification_set_size"),
    },
    API_13: {
        "DraftTargetDecodingConfig": (),
        "Eagle3DecodingConfig": (
            "eagle_choices",
            "use_dynamic_tree",
            "dynamic_tree_max_topK",
            "num_eagle_layers",
            "max_non_leaves_per_layer",
            "eagle3_layers_to_capture",
            "eagle3_model_arch",
            "sa_config",
            "spec_dec_variant",
        ),
        "NGramDecodingConfig": ("max_matching_ngram_size", "is_keep_all", "is_use_oldest", "is_public_pool"),
        "MTPDecodingConfig": (
            "num_nextn_predict_layers",
            "use_relaxed_acceptance_for_thinking",
            "relaxed_topk",
            "relaxed_delta",
            "use_mtp_vanilla",
            "num_nextn_predict_layers_from_model_config",
            "begin_thinking_phase_token",
            "end_thinking_phase_token",
            "use_dynamic_tree",
            "dynamic_tree_max_topK",
            "sa_config",
            "spec_dec_variant",
        ),
        "MedusaDecodingConfig": ("medusa_choices", "num_medusa_heads"),
        "LookaheadDecodingConfig": ("max_window_size", "max_ngram_size", "max_verification_set_size"),
    },
}
# Fields that appear or disappear inside the 1.3 generation:
# (class or "*", field) -> (first version, first version without).
_FIELD_SPAN = {
    ("*", "moe_backend"): ("1.4.0rc1", None),
    ("Eagle3DecodingConfig", "spec_dec_variant"): ("1.4.0rc1", None),
    ("Eagle3DecodingConfig", "eagle_choices"): (None, "1.4.0rc1"),
}

# 1.2.1 asserts NGram max_matching_ngram_size > 0 but defaults it to 0; 1.3+ defaults to 2. We always emit it.
DEFAULT_NGRAM_MAX = 2


def api_for(version: str) -> Optional[str]:
    """The API generation a TensorRT-LLM version is mapped with, or None when this mapping does not know it."""
    try:
        v = Version(version)
    except InvalidVersion:
        return None
    if Version("1.2.0") <= v < Version("1.3.0rc0"):
        return API_12
    if v >= Version("1.3.0rc27"):
        return API_13
    return None


def class_for(method: str, version: str) -> Optional[Tuple[str, str]]:
    """(class name, YAML decoding_type) for a method under a version, None when that version has no mapping."""
    api = api_for(version)
    return CLASSES[api].get(method) if api else None


def fields(class_name: str, version: str) -> FrozenSet[str]:
    """The constructor fields of a decoding-config class in a given TensorRT-LLM version."""
    api = api_for(version)
    names = set(_BASE[api]) | set(_OWN[api][class_name])
    v = Version(version)
    for (cls, name), (since, until) in _FIELD_SPAN.items():
        if cls in ("*", class_name) and name in names:
            if (since and v < Version(since)) or (until and v >= Version(until)):
                names.discard(name)
    return frozenset(names)


def speculative_kwargs(speculation, draft: Optional[str], version: str) -> Dict[str, Any]:
    """The decoding-config constructor arguments for one run (before backend_overrides)."""
    method, k = speculation.method, speculation.num_speculative_tokens
    api = api_for(version)
    if method == "draft_model":
        return {"max_draft_len": k, "speculative_model": draft}
    if method == "eagle3":
        kwargs = {"max_draft_len": k, "speculative_model": draft}
        if api == API_12:
            kwargs["eagle3_one_model"] = True  # EAGLE-3 through EagleDecodingConfig (its default, stated explicitly)
        return kwargs
    if method == "eagle":
        return {"max_draft_len": k, "speculative_model": draft}
    if method == "ngram":
        return {"max_draft_len": k, "max_matching_ngram_size": speculation.ngram_max or DEFAULT_NGRAM_MAX}
    if method == "mtp":
        # k is the number of MTP layers used; it overwrites max_draft_len. None: the model's own (1.2.1 default 1).
        return {} if k is None else {"num_nextn_predict_layers": k}
    if method == "medusa":
        # k heads, top-1 each: a linear tree of k nodes ([0], [0, 0], ...), so max_draft_len (tree size) is k too.
        return {
            "max_draft_len": k,
            "num_medusa_heads": k,
            "medusa_choices": [[0] * (i + 1) for i in range(k)],
            "speculative_model": draft,
        }
    if method == "lookahead":
        # k is the lookahead window; n-gram size and verification set keep TensorRT-LLM's defaults (3 and 4).
        return {"max_window_size": k}
    raise ValueError(f"no TensorRT-LLM mapping for method={method}")


def draft_len_schedule(schedule: Dict[int, int]) -> Dict[int, int]:
    """speculation.k_schedule -> TensorRT-LLM's {largest batch size of a range: draft length}. Above its largest key
    TensorRT-LLM drafts nothing, so a trailing k=0 range is left implicit and a last k > 0 runs to SCHEDULE_OPEN_END
    (TensorRT-LLM's default max_batch_size)."""
    ranges = schedule_ranges(schedule, SCHEDULE_OPEN_END)
    if ranges[-1][2] == 0 and len(ranges) > 1:
        ranges = ranges[:-1]
    return {end: k for _, end, k in ranges}


def sampling_params(generation) -> Dict[str, Any]:
    if generation.temperature > 0:
        return {
            "max_tokens": generation.max_new_tokens,
            "temperature": generation.temperature,
            "top_p": generation.top_p,
            "seed": generation.seed,
        }
    return {"max_tokens": generation.max_new_tokens, "temperature": 0.0}  # temperature 0 is greedy in TRT-LLM


def native_config(
    speculation, generation, backend, target: str, draft: Optional[str], version: str, version_source: str
) -> Dict[str, Any]:
    """Everything `LLM(...)` and `SamplingParams(...)` get for one run, as plain data (printed by --dry-run)."""
    method, runtime = str(speculation.method), str(backend.runtime)
    llm_kwargs: Dict[str, Any] = {
        "model": target,
        "tensor_parallel_size": backend.tensor_parallel_size,
        "dtype": str(backend.dtype),
    }
    if runtime == "pytorch":
        # Iteration stats carry specDecodingStats (drafted / accepted / request-steps); PyTorch backend only.
        llm_kwargs["enable_iter_perf_stats"] = True
        if method in ("draft_model", "ngram"):
            llm_kwargs["disable_overlap_scheduler"] = True  # as TensorRT-LLM's DraftTarget and NGram examples run
    speculative = None
    if method != "none":
        class_name, decoding_type = class_for(method, version)
        kwargs = speculative_kwargs(speculation, draft, version)
        if speculation.k_schedule:
            kwargs["draft_len_schedule"] = draft_len_schedule(speculation.k_schedule)
        kwargs.update(speculation.backend_overrides)
        speculative = {
            "class": class_name,
            "import": f"tensorrt_llm.llmapi.{class_name}",
            "decoding_type": decoding_type,
            "kwargs": kwargs,
        }
    return {
        "tensorrt_llm_version": version,
        "version_source": version_source,
        "api": api_for(version),
        "runtime": runtime,
        "llm": {"import": LLM_IMPORT[runtime], "kwargs": llm_kwargs},
        "speculative_config": speculative,
        "sampling_params": sampling_params(generation),
    }
