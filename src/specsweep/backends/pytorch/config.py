"""PyTorch (Hugging Face transformers) backend settings and what it can run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from specsweep.config.schema import BackendConfig

SUPPORTED_METHODS = ("none", "draft_model", "ngram")
DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class PytorchBackendConfig(BackendConfig):
    """transformers `generate()`: assisted generation (draft_model) and prompt lookup (ngram), batch size 1."""

    name: str = "pytorch"
    dtype: str = "bfloat16"  # bfloat16 | float16 | float32 (bf16 verification is not bit-exact; fp32 is)
    device: str = "cpu"  # cpu | cuda | cuda:N
    num_threads: Optional[int] = None  # torch intra-op threads; None: torch's default


def supported_methods() -> tuple[str, ...]:
    return SUPPORTED_METHODS


def check(cfg) -> list[tuple[str, object, str]]:
    """Backend-specific rules: (field, value, what is allowed) for each violation."""
    problems = []
    backend, spec = cfg.backend, cfg.speculation
    if backend.dtype not in DTYPES:
        problems.append(("backend.dtype", backend.dtype, f"one of {', '.join(DTYPES)}"))
    if not (backend.device == "cpu" or backend.device == "cuda" or backend.device.startswith("cuda:")):
        problems.append(("backend.device", backend.device, "cpu, cuda or cuda:N"))
    if backend.num_threads is not None and backend.num_threads < 1:
        problems.append(("backend.num_threads", backend.num_threads, "an integer >= 1, or null for torch's default"))
    if spec.method != "none" and cfg.generation.batch_size != 1:
        problems.append(
            ("generation.batch_size", cfg.generation.batch_size, "1 with speculation on backend=pytorch (transformers assisted generation is batch-size-1 only); use backend=vllm for batches")
        )
    if spec.method == "ngram" and spec.ngram_min not in (None, 1):
        problems.append(
            ("speculation.ngram_min", spec.ngram_min, "1 or null on backend=pytorch: transformers prompt lookup always tries windows from ngram_max down to 1; sweep ngram_min with backend=vllm")
        )
    if spec.draft_tp_size not in (None, 1):
        problems.append(("speculation.draft_tp_size", spec.draft_tp_size, "1 or null on backend=pytorch (no tensor parallelism)"))
    return problems
