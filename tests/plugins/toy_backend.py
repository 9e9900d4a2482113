"""A whole specsweep backend in one file, registered through an entry point (docs/extending.md walks through it).

The "engine" is a deterministic byte-level language model that needs no weights: like an induction head, it repeats
whatever followed the latest earlier occurrence of the last token (else the next id), so prompt lookup's longer n-gram
matches are often, but not always, what it would say. It supports
`none` and `ngram` speculation; `ngram` drafts by prompt lookup and verifies against the model, counting exactly
what was drafted and accepted, as a real engine does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

from specsweep.backends.base import Backend, BackendConfig
from specsweep.core import AcceptanceCounts, Generation, Problem, Prompt
from specsweep.fields import bounded


@dataclass
class ToyBackendConfig(BackendConfig):
    """The declaration: fields (with defaults and bounds), methods, checks, mapping and where the engine lives."""

    engine = "toy_backend.ToyBackend"
    distributions = ("toy-backend",)

    name: str = "toy"
    vocab: int = bounded(64, ge=8, le=256)  # bytes are folded into this many token ids
    token_delay_s: float = bounded(0.0, ge=0)  # sleep per generated token (slow jobs for kill/interrupt tests)

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return ("none", "ngram")

    def check(self, cfg) -> List[Problem]:
        if cfg.generation.batch_size != 1:
            return [("generation.batch_size", cfg.generation.batch_size, "1 on backend=toy")]
        return []

    def native_config(self, cfg, models) -> Dict[str, Any]:
        spec = cfg.speculation
        return {
            "vocab": self.vocab,
            "token_delay_s": self.token_delay_s,
            "max_new_tokens": cfg.generation.max_new_tokens,
            "lookup": None if spec.method == "none" else {"k": spec.num_speculative_tokens, "n": spec.ngram_max or 2},
        }


class ToyBackend(Backend):
    name = "toy"

    def load(self) -> None:
        self.vocab = self.native["vocab"]

    def encode(self, prompt: Prompt) -> List[int]:
        return [b % self.vocab for b in prompt.text.encode()]

    def _next(self, ids: List[int]) -> int:
        last = ids[-1]
        for i in range(len(ids) - 2, -1, -1):
            if ids[i] == last:
                return ids[i + 1]
        return (last + 1) % self.vocab

    def _propose(self, ids: List[int], k: int, n: int) -> List[int]:
        """Prompt lookup: the k ids after the latest earlier occurrence of the last n ids."""
        tail = ids[-n:]
        for start in range(len(ids) - n - 1, -1, -1):
            if ids[start : start + n] == tail:
                return ids[start + n : start + n + k]
        return []

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        return [self._generate_one(p) for p in prompts]

    def _generate_one(self, prompt: Prompt) -> Generation:
        ids, budget, lookup = self.encode(prompt), self.native["max_new_tokens"], self.native["lookup"]
        counts = AcceptanceCounts() if lookup else None
        start, first = time.perf_counter(), None
        out: List[int] = []
        while len(out) < budget:
            draft = self._propose(ids + out, lookup["k"], lookup["n"])[: budget - len(out) - 1] if lookup else []
            accepted = 0
            for token in draft:  # verification: keep drafts while they equal the model's own next token
                if token != self._next(ids + out):
                    break
                out.append(token)
                accepted += 1
            if counts is not None:
                counts.record_step(len(draft), accepted)
            out.append(self._next(ids + out))  # the verifier's own token (the bonus token when all were accepted)
            time.sleep(self.native["token_delay_s"])
            first = first or time.perf_counter()
        return Generation(prompt.id, len(ids), out, time.perf_counter() - start, first - start, counts, text=str(out))

    def forward_timers(self, prompt: Prompt, n_max: int) -> Dict[Any, Callable[[], float]]:
        """For the cost model (measurement.cost_model): one "forward" over n new tokens is the model's next-token
        rule at each of them plus the per-step delay; the base class times these in rounds (Backend.step_costs)."""
        ids = self.encode(prompt)

        def forward(n: int) -> Callable[[], float]:
            def timed() -> float:
                start = time.perf_counter()
                for i in range(n):
                    self._next(ids + ids[:i])
                time.sleep(self.native["token_delay_s"])
                return time.perf_counter() - start

            return timed

        return {n: forward(n) for n in range(1, n_max + 1)}  # prompt lookup: no draft model to time

    def environment(self) -> Dict[str, Any]:
        return {"engine": "toy", "vocab": self.vocab}
