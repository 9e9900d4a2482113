"""The speculation methods: one row each, read by validation, model resolution, dry-run, theory and the report.

Adding a method is one row here plus its mapping in each backend that runs it (and a `conf/speculation/` preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Literal, Optional

from specsweep.core import Choice

# Where a method's proposer weights come from.
#   none: no separate weights (the target itself, a lookup table or a suffix tree)
#   draft: a draft LM, default model.draft            head: trained heads, default model.heads.<method>
#   optional_head: heads when given, else the target's own layers
Proposer = Literal["none", "draft", "head", "optional_head"]
# How the proposer's cost (c, in draft-token time / target-token time) is known for the theory section.
#   timed: the draft LM is timed alone        free: a table lookup in the context, c = 0      unknown: not measured
ProposerCost = Literal["timed", "free", "unknown"]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    proposer: Proposer
    k_optional: bool  # k may be null: the engine or checkpoint supplies it
    ngram_sizes: bool  # matches prompt n-grams of sizes ngram_min..ngram_max
    cost: ProposerCost
    summary: str

    @property
    def takes_weights(self) -> bool:
        return self.proposer != "none"

    @property
    def needs_weights(self) -> bool:
        return self.proposer in ("draft", "head")

    def weights_field(self) -> Optional[str]:
        """The model-entry field a run's proposer weights default to (None: the method takes none)."""
        if self.proposer == "draft":
            return "model.draft"
        if self.proposer in ("head", "optional_head"):
            return f"model.heads.{self.name}"
        return None


def _row(name, proposer, k_optional=False, ngram_sizes=False, cost="unknown", summary="") -> MethodSpec:
    return MethodSpec(name, proposer, k_optional, ngram_sizes, cost, summary)


# fmt: off
METHOD_TABLE: Dict[str, MethodSpec] = {m.name: m for m in (
    _row("none", "none", k_optional=True, summary="no speculation: plain autoregressive decoding (the baseline)"),
    _row("draft_model", "draft", cost="timed", summary="a small same-tokenizer LM drafts k tokens"),
    _row("ngram", "none", ngram_sizes=True, cost="free", summary="prompt lookup: what followed the last n-gram match"),
    _row("eagle", "head", summary="EAGLE-1/2 head on the target's hidden states"),
    _row("eagle3", "head", summary="EAGLE-3 head fed by several target layers"),
    _row("medusa", "head", summary="Medusa heads predict k future tokens"),
    _row("mlp_speculator", "head", summary="IBM MLP speculator on the target's hidden state"),
    _row("suffix", "none", k_optional=True, summary="suffix-tree drafting over prompt and earlier outputs"),
    _row("mtp", "none", k_optional=True, summary="the target's own multi-token-prediction layers"),
    _row("lookahead", "none", summary="Jacobi lookahead decoding; k is the window"),
    _row("ngram_gpu", "none", ngram_sizes=True, cost="free", summary="prompt lookup matched by a GPU kernel (vLLM)"),
    _row("dflash", "head", k_optional=True, summary="block-diffusion drafter; k null: its block size"),
    _row("dspark", "optional_head", k_optional=True, summary="DSpark parallel drafting; k null: its block size"),
)}
# fmt: on

# The closed set of `speculation.method` values, as the enum OmegaConf checks at compose time.
Method = Choice("Method", {name: name for name in METHOD_TABLE})

METHODS = tuple(METHOD_TABLE)


def method_spec(method) -> MethodSpec:
    return METHOD_TABLE[str(method)]
