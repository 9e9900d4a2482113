"""Unified config -> llama.cpp's own settings, as plain data. Pure: no xllamacpp, no I/O.

Written against xllamacpp 2026.10.11549 (llama.cpp's server embedded in-process). The native config is
{"params": {dotted `xllamacpp.CommonParams` field: value}, "request": {server request body fields}}: the engine sets
every dotted field on a fresh `CommonParams` (speculative types by their enum names) and sends "request" with every
prompt. docs/llamacpp.md has the table of what maps where.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from specsweep.core import Choice
from specsweep.serving.prometheus import CounterNames

SPEC_TYPE = "COMMON_SPECULATIVE_TYPE_"  # xllamacpp.common_speculative_type member names start with this


class WaitPolicy(Choice):
    """OpenMP's OMP_WAIT_POLICY for llama.cpp's threads (the CPU wheel runs them under OpenMP)."""

    passive = "passive"  # a thread with no work sleeps: repeatable, and a second server beside it is not slowed
    active = "active"  # it spins until work comes (unset: 300,000 spins, then sleep): faster alone, slow when shared


class NgramVariant(Choice):
    """llama.cpp's n-gram proposers (`--spec-type ngram-*`), for speculation.method=ngram."""

    ngram_simple = "ngram_simple"  # the m tokens after the last earlier occurrence of the last n tokens
    ngram_map_k = "ngram_map_k"  # as ngram_simple, through a hash map of the context's n-grams
    ngram_map_k4v = "ngram_map_k4v"  # keeps up to 4 continuations per n-gram, drafts the most frequent
    ngram_mod = "ngram_mod"  # a hash pool of n_match-grams -> next token, shared by every slot
    ngram_cache = "ngram_cache"  # llama.cpp's lookup decoding: n-gram statistics of sizes 1..4 (fixed)


# The methods drafted by a model whose weights are a separate GGUF (speculative.draft.mparams.path), by the type.
DRAFT_TYPES = {"draft_model": "DRAFT_SIMPLE", "eagle3": "DRAFT_EAGLE3", "dflash": "DRAFT_DFLASH"}
MTP_TYPE = "DRAFT_MTP"  # the target's own multi-token-prediction layers (CommonParams.load_mtp)
NGRAM_TYPES = {variant.value: variant.name.upper() for variant in NgramVariant}

# llama.cpp's defaults (common.h of the version above) for what a null field leaves to the engine.
DEFAULT_NGRAM_SIZE_N = 12  # common_params_speculative_ngram_map.size_n: the n-gram looked up
DEFAULT_NGRAM_MOD_MATCH = 24  # common_params_speculative_ngram_mod.n_match

# speculation.backend_overrides keys -> the CommonParams field each sets, by what the method drafts with.
MODEL_OVERRIDES = {
    "n_min": "speculative.draft.n_min",  # drafts shorter than this are dropped
    "p_min": "speculative.draft.p_min",  # the draft stops at a token it is less sure of (default 0.0 since #26100)
    "p_split": "speculative.draft.p_split",
}
NGRAM_OVERRIDES: Dict[str, Dict[str, str]] = {
    "ngram_simple": {"n_min": "speculative.draft.n_min"},
    "ngram_map_k": {"n_min": "speculative.draft.n_min", "min_hits": "speculative.ngram_map_k.min_hits"},
    "ngram_map_k4v": {"n_min": "speculative.draft.n_min", "min_hits": "speculative.ngram_map_k4v.min_hits"},
    "ngram_mod": {"n_min": "speculative.ngram_mod.n_min"},
    "ngram_cache": {
        "n_min": "speculative.draft.n_min",
        "lookup_cache_static": "speculative.ngram_cache.lookup_cache_static",
        "lookup_cache_dynamic": "speculative.ngram_cache.lookup_cache_dynamic",
    },
}

# The spec-decode counters of llama.cpp's /metrics (server started with endpoint_metrics), llama.cpp#26389.
COUNTERS = CounterNames(
    num_drafts="llamacpp:spec_decode_num_drafts",
    drafted="llamacpp:spec_decode_num_draft_tokens",
    accepted="llamacpp:spec_decode_num_accepted_tokens",
    per_position="llamacpp:spec_decode_num_accepted_tokens_per_pos",
)


def overridable(method: str, variant: str) -> Dict[str, str]:
    """The backend_overrides keys a method takes on llama.cpp -> the CommonParams field each sets."""
    if method == "ngram":
        return NGRAM_OVERRIDES[variant]
    return MODEL_OVERRIDES if method != "none" else {}


def sampling(generation) -> Dict[str, Any]:
    """Greedy is top_k=1 (argmax, whatever else is set); sampling is temperature and top_p only, as on the other
    backends (llama.cpp's own top_k=40 and min_p=0.05 defaults switched off)."""
    greedy = generation.temperature == 0
    return {
        "temp": generation.temperature,
        "top_k": 1 if greedy else 0,
        "top_p": 1.0 if greedy else generation.top_p,
        "min_p": 0.0,
        "seed": generation.seed,
    }


def request(generation) -> Dict[str, Any]:
    """The fields every request carries besides its prompt. cache_prompt=false: every request prefills its whole
    prompt, as on the other backends (llama.cpp would otherwise reuse the previous repetition's KV cache)."""
    s = sampling(generation)
    fields = {"temperature": s["temp"], "top_k": s["top_k"], "top_p": s["top_p"], "min_p": s["min_p"]}
    return {"max_tokens": generation.max_new_tokens, **fields, "seed": s["seed"], "cache_prompt": False}


def _draft_model(speculation, backend, draft: Optional[str], threads: int) -> Dict[str, Any]:
    """A proposer with weights of its own (a draft LM, an EAGLE-3 head, a DFlash drafter) or the target's MTP layers."""
    method = str(speculation.method)
    params: Dict[str, Any] = {"speculative.types": [SPEC_TYPE + DRAFT_TYPES.get(method, MTP_TYPE)]}
    if method == "mtp":
        params["load_mtp"] = True
    else:
        params["speculative.draft.mparams.path"] = draft
    if speculation.num_speculative_tokens is not None:  # null (dflash, mtp): llama.cpp's default, clamped to the head
        params["speculative.draft.n_max"] = speculation.num_speculative_tokens
    draft_threads = backend.draft_threads or threads
    params.update(
        {
            "speculative.draft.n_min": 0,
            "speculative.draft.p_min": 0.0,  # recorded always: llama.cpp's default moved from 0.75 to 0.0 (#26100)
            "speculative.draft.cpuparams.n_threads": draft_threads,
            "speculative.draft.cpuparams_batch.n_threads": draft_threads,
            "speculative.draft.n_gpu_layers": backend.n_gpu_layers,
        }
    )
    return params


def _ngram(speculation, variant: str) -> Dict[str, Any]:
    """Prompt lookup: the window's largest n-gram is the one llama.cpp matches, k the most tokens it copies."""
    k = speculation.num_speculative_tokens
    params: Dict[str, Any] = {
        "speculative.types": [SPEC_TYPE + NGRAM_TYPES[variant]],
        "speculative.draft.n_max": k,
        "speculative.draft.n_min": 0,
    }
    if variant == "ngram_mod":
        n_match = speculation.ngram_max or DEFAULT_NGRAM_MOD_MATCH
        params.update({"speculative.ngram_mod.n_match": n_match, "speculative.ngram_mod.n_max": k})
        params["speculative.ngram_mod.n_min"] = 0  # llama.cpp's 48 would drop every draft shorter than 48 tokens
    elif variant != "ngram_cache":  # ngram_cache's n-gram sizes are fixed (1..4)
        size_n = speculation.ngram_max or DEFAULT_NGRAM_SIZE_N
        params.update({f"speculative.{variant}.size_n": size_n, f"speculative.{variant}.size_m": k})
    return params


def speculative(speculation, backend, draft: Optional[str], threads: int) -> Dict[str, Any]:
    """The `speculative.*` fields of CommonParams for this method, backend_overrides applied last."""
    method = str(speculation.method)
    if method == "none":
        return {"speculative.types": [SPEC_TYPE + "NONE"]}
    if method == "ngram":
        params = _ngram(speculation, str(backend.ngram_variant))
    else:
        params = _draft_model(speculation, backend, draft, threads)
    fields = overridable(method, str(backend.ngram_variant))
    params.update({fields[key]: value for key, value in speculation.backend_overrides.items() if key in fields})
    return params


def native_config(cfg, target: str, draft: Optional[str], cores: int) -> Dict[str, Any]:
    """{"params": dotted CommonParams fields, "request": request body fields, "env": the engine's environment} for one
    run. `cores`: the threads a null backend.num_threads stands for (the machine's, as the caller counts them)."""
    backend, generation = cfg.backend, cfg.generation
    threads = backend.num_threads or cores
    params: Dict[str, Any] = {
        "model.path": target,
        "n_ctx": backend.n_ctx,
        "n_batch": backend.n_batch,
        "n_parallel": 1,  # one request at a time: the offline engine (concurrency is llamacpp_server's)
        "n_gpu_layers": backend.n_gpu_layers,
        "cpuparams.n_threads": threads,
        "cpuparams_batch.n_threads": threads,
        "cache_prompt": False,
        "cache_ram_mib": 0,  # no host-memory prompt cache either: a request never starts from another's state
        "endpoint_metrics": True,  # the spec-decode counters (per request: differenced around it)
        "verbosity": 0,  # llama.cpp logs nothing but errors into the job's output
        **{f"sampling.{key}": value for key, value in sampling(generation).items()},
        **speculative(cfg.speculation, backend, draft, threads),
    }
    return {"params": params, "request": request(generation), "env": engine_env(backend)}


def engine_env(backend) -> Dict[str, str]:
    """Environment the engine needs when it is loaded (libgomp reads OMP_WAIT_POLICY once, at load)."""
    return {"OMP_WAIT_POLICY": str(backend.omp_wait_policy).upper()} if backend.omp_wait_policy else {}
