"""llama.cpp backend (in-process server, xllamacpp): its settings, what it runs, its checks and its mapping.

Never imports xllamacpp: the declaration is read by validation, --dry-run and the support matrix on machines without it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from specsweep.backends.base import AdaptiveDraft, BackendConfig
from specsweep.backends.llamacpp import mapping
from specsweep.backends.llamacpp.mapping import NgramVariant, WaitPolicy
from specsweep.core import Problem
from specsweep.fields import bounded
from specsweep.models import packaged
from specsweep.models.resolve import ResolvedModels, gguf_value

XLLAMACPP_VERSION = "2026.10.11549"  # the version the mapping is written and tested against
INSTALL_HINT = f"an installed xllamacpp (llama.cpp in-process): pip install xllamacpp=={XLLAMACPP_VERSION}"

# llama.cpp's confidence cut-off for a draft model, measured beside the best fixed k (hparams_search=best_k).
ADAPTIVE_DRAFTS = (
    AdaptiveDraft(
        name="p_min",
        backend_overrides={"p_min": 0.75},
        k="cap",
        about="speculative.draft.p_min=0.75 (llama.cpp's default before #26100): the draft stops at the first token "
        "the draft model gives less than 0.75 probability, so each step drafts up to k tokens",
    ),
)


def installed() -> bool:
    """xllamacpp is importable (found without importing it)."""
    return importlib.util.find_spec("xllamacpp") is not None


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class LlamacppBackendConfig(BackendConfig):
    """llama.cpp's own server run in-process (xllamacpp) on GGUF weights, one request at a time: a draft model,
    EAGLE-3 / MTP / DFlash heads, and five n-gram proposers."""

    engine = "specsweep.backends.llamacpp.backend.LlamacppBackend"
    distributions = ("xllamacpp",)
    weights_format = "gguf"  # model references resolve to GGUF files (models.resolve), packaged ones unconverted
    # Interleaved pairing gives the baseline a server of its own (xllamacpp's server ignores per-request speculative
    # settings, so one server cannot turn drafting off); both map the same GGUF file, so the weights are in memory once.
    # Unless threads sleep at once (passive), the idle server's spinning slowed the interleaved baseline by 17%.
    single_engine_reason = (
        "unless OMP_WAIT_POLICY is passive (backend.omp_wait_policy) an idle server's threads spin before they sleep "
        "and slow the other one's, so the baseline and the speculative server run one after the other"
    )

    name: str = "llamacpp"
    num_threads: Optional[int] = bounded(None, ge=1, null="the machine's cores")  # target: decoding and prompts
    draft_threads: Optional[int] = bounded(None, ge=1, null="backend.num_threads")  # the draft model's threads
    n_ctx: int = bounded(4096, ge=64)  # context size (tokens) of the server: prompt + output must fit
    n_batch: int = bounded(2048, ge=1)  # most prompt tokens per llama_decode call (logical batch)
    n_gpu_layers: int = bounded(-1, ge=-1)  # layers offloaded on a GPU build (-1: llama.cpp's choice); CPU: unused
    ngram_variant: NgramVariant = NgramVariant.ngram_simple  # the n-gram proposer of speculation.method=ngram
    # OpenMP's wait policy for llama.cpp's threads (null: as inherited; unset, they spin 300,000 times, then sleep).
    # passive: repeatable, lets the baseline interleave; unset was 23% faster alone on an idle machine (results.md)
    omp_wait_policy: Optional[WaitPolicy] = WaitPolicy.passive

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return ("none", "draft_model", "ngram", "eagle3", "mtp", "dflash")

    def wait_policy(self) -> str:
        """The OMP_WAIT_POLICY the engine runs with: the field's, else the one inherited ("" when unset)."""
        return str(self.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY") or "").lower()

    def pairing_blocker(self) -> Optional[str]:
        return None if self.wait_policy() == "passive" else self.single_engine_reason

    @classmethod
    def adaptive_drafts(cls, method: str) -> Tuple[AdaptiveDraft, ...]:
        return ADAPTIVE_DRAFTS if method == "draft_model" else ()

    def check(self, cfg) -> List[Problem]:
        if not cfg.dry_run and not installed():
            return [("backend", self.name, INSTALL_HINT)]
        problems = self._generation_problems(cfg) + self._ngram_problems(cfg.speculation)
        problems += self._override_problems(cfg.speculation)
        if str(cfg.speculation.method) == "mtp" and (problem := _mtp_problem(cfg.model.target)):
            problems.append(problem)
        return problems

    def _generation_problems(self, cfg) -> List[Problem]:
        problems = []
        if cfg.generation.batch_size != 1:
            allowed = "1 on backend=llamacpp (one request at a time; a server under load is backend=llamacpp_server)"
            problems.append(("generation.batch_size", cfg.generation.batch_size, allowed))
        if cfg.generation.max_new_tokens >= self.n_ctx:
            allowed = f"more than generation.max_new_tokens ({cfg.generation.max_new_tokens}) plus the prompt's tokens"
            problems.append(("backend.n_ctx", self.n_ctx, allowed))
        if cfg.speculation.draft_tp_size not in (None, 1):
            allowed = "1 or null on backend=llamacpp (no tensor parallelism)"
            problems.append(("speculation.draft_tp_size", cfg.speculation.draft_tp_size, allowed))
        return problems

    def _ngram_problems(self, speculation) -> List[Problem]:
        """llama.cpp matches exactly one n-gram size (no fallback to shorter ones), and ngram_simple drafts only when
        it can copy at least that many tokens."""
        if str(speculation.method) != "ngram":
            return []
        variant = str(self.ngram_variant)
        if variant == "ngram_cache":
            why = "null with backend.ngram_variant=ngram_cache (llama.cpp fixes its n-gram sizes at 1..4)"
            return [
                (f"speculation.{n}", getattr(speculation, n), why)
                for n in ("ngram_min", "ngram_max")
                if getattr(speculation, n) is not None
            ]
        problems = []
        size_n = speculation.ngram_max or mapping.DEFAULT_NGRAM_SIZE_N
        if speculation.ngram_min not in (None, 1, speculation.ngram_max):
            allowed = (
                f"null, 1 or speculation.ngram_max ({speculation.ngram_max}) on backend={self.name}: llama.cpp matches "
                "only the ngram_max-token n-gram, so any other ngram_min would measure the same thing"
            )
            problems.append(("speculation.ngram_min", speculation.ngram_min, allowed))
        k = speculation.num_speculative_tokens
        if variant == "ngram_simple" and k is not None and k < size_n:
            allowed = (
                f"an integer >= {size_n} (the n-gram size, speculation.ngram_max) with ngram_variant=ngram_simple: "
                "llama.cpp drafts only when it can copy at least as many tokens as it matched"
            )
            problems.append(("speculation.num_speculative_tokens", k, allowed))
        return problems

    def _override_problems(self, speculation) -> List[Problem]:
        fields = mapping.overridable(str(speculation.method), str(self.ngram_variant))
        allowed = (
            f"one of {', '.join(fields)} for method={speculation.method} on backend={self.name}"
            if fields
            else f"no backend_overrides for method={speculation.method} on backend={self.name}"
        )
        return [
            (f"speculation.backend_overrides.{key}", value, allowed)
            for key, value in speculation.backend_overrides.items()
            if key not in fields
        ]

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        draft = models.draft if str(cfg.speculation.method) in mapping.DRAFT_TYPES else None
        return mapping.native_config(cfg, models.target, draft, machine_cores())


def _mtp_problem(target: str) -> Optional[Problem]:
    """method=mtp needs a target whose GGUF carries multi-token-prediction layers (`<arch>.nextn_predict_layers`)."""
    why = "a target with multi-token-prediction layers for method=mtp on backend=llamacpp"
    if target.startswith(packaged.PREFIX):
        return ("model.target", target, f"{why} (the packaged models are plain Qwen2.5: no MTP layers)")
    path = os.path.expanduser(target)
    if not os.path.isfile(path):
        return None  # model resolution reports the missing file
    try:
        layers = gguf_value(path, ".nextn_predict_layers")
    except (OSError, ValueError) as err:
        return ("model.target", target, f"{why} (its GGUF header is unreadable: {err})")
    if not layers:
        return ("model.target", target, f"{why} (its GGUF has no <arch>.nextn_predict_layers)")
    return None
