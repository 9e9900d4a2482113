"""PyTorch (Hugging Face transformers) backend: its settings, what it runs, its checks and its mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from specsweep.backends.base import AdaptiveDraft, BackendConfig, Dtype
from specsweep.backends.pytorch import mapping
from specsweep.core import Problem
from specsweep.fields import bounded
from specsweep.models.resolve import ResolvedModels

# transformers' two ways of letting assisted generation pick its own draft length. The engine sets the assistant's
# generation_config before every generate() call, so each generation starts from these values (what transformers
# calls "transient": nothing carries over from the previous prompt).
ADAPTIVE_DRAFTS = (
    AdaptiveDraft(
        name="heuristic",
        backend_overrides={
            "num_assistant_tokens_schedule": "heuristic_transient",
            "assistant_confidence_threshold": 0.0,
        },
        k="start",
        about="num_assistant_tokens_schedule=heuristic: +2 after a fully accepted draft, -1 otherwise",
    ),
    AdaptiveDraft(
        name="confidence",
        backend_overrides={"num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4},
        k="cap",
        about="assistant_confidence_threshold=0.4 (transformers' default): the draft stops at a token it is less "
        "sure of than the threshold, which is re-fitted on the acceptances seen so far (scikit-learn's ROC curve)",
    ),
)


@dataclass
class PytorchBackendConfig(BackendConfig):
    """transformers `generate()`: assisted generation (draft_model) and prompt lookup (ngram), batch size 1."""

    engine = "specsweep.backends.pytorch.backend.PytorchBackend"
    distributions = ("torch", "transformers")
    single_engine_reason = None  # the baseline and the speculative engine share the target weights (session slot)
    synthetic_acceptance = True  # a logits processor decides acceptance at verification (backend.SyntheticVerifier)

    name: str = "pytorch"
    dtype: Dtype = Dtype.bfloat16  # bf16 verification is not bit-exact; fp32 is
    device: str = "cpu"  # cpu | cuda | cuda:N
    num_threads: Optional[int] = bounded(None, ge=1, null="torch's default")  # torch intra-op threads

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return ("none", "draft_model", "ngram")

    @classmethod
    def adaptive_drafts(cls, method: str) -> Tuple[AdaptiveDraft, ...]:
        return ADAPTIVE_DRAFTS if method == "draft_model" else ()

    def check(self, cfg) -> List[Problem]:
        problems = []
        speculation = cfg.speculation
        if not (self.device in ("cpu", "cuda") or self.device.startswith("cuda:")):
            problems.append(("backend.device", self.device, "cpu, cuda or cuda:N"))
        if speculation.method != "none" and cfg.generation.batch_size != 1:
            problems.append(
                (
                    "generation.batch_size",
                    cfg.generation.batch_size,
                    "1 with speculation on backend=pytorch (transformers assisted generation is "
                    "batch-size-1 only); use backend=vllm for batches",
                )
            )
        if speculation.method == "ngram" and speculation.ngram_min not in (None, 1):
            problems.append(
                (
                    "speculation.ngram_min",
                    speculation.ngram_min,
                    "1 or null on backend=pytorch: transformers prompt lookup always tries windows from "
                    "ngram_max down to 1; sweep ngram_min with backend=vllm",
                )
            )
        if speculation.draft_tp_size not in (None, 1):
            problems.append(
                (
                    "speculation.draft_tp_size",
                    speculation.draft_tp_size,
                    "1 or null on backend=pytorch (no tensor parallelism)",
                )
            )
        return problems

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        native = mapping.native_config(cfg.speculation, cfg.generation)
        draft = models.draft if cfg.speculation.method == "draft_model" else None
        native["from_pretrained"] = mapping.loads(models.target, draft, str(self.dtype), self.device)
        return native
