"""What every backend implements and returns. Backends generate and count; measurement lives elsewhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol


@dataclass
class Prompt:
    id: str
    category: str
    text: str


@dataclass
class AcceptanceCounts:
    """Raw speculative counters for one or more generations (vLLM's definitions).

    drafted: draft tokens proposed; accepted: draft tokens accepted (bonus token excluded);
    num_drafts: verification steps that carried at least one draft token;
    accepted_per_position[i]: steps whose draft token at position i was accepted.
    """

    drafted: int = 0
    accepted: int = 0
    num_drafts: int = 0
    accepted_per_position: List[int] = field(default_factory=list)

    def add(self, other: "AcceptanceCounts") -> "AcceptanceCounts":
        width = max(len(self.accepted_per_position), len(other.accepted_per_position))
        per_pos = [0] * width
        for counts in (self.accepted_per_position, other.accepted_per_position):
            for i, n in enumerate(counts):
                per_pos[i] += n
        return AcceptanceCounts(
            self.drafted + other.drafted, self.accepted + other.accepted, self.num_drafts + other.num_drafts, per_pos
        )

    def record_step(self, drafted: int, accepted: int) -> None:
        if drafted <= 0:
            return
        self.drafted += drafted
        self.accepted += accepted
        self.num_drafts += 1
        if len(self.accepted_per_position) < drafted:
            self.accepted_per_position.extend([0] * (drafted - len(self.accepted_per_position)))
        for i in range(accepted):
            self.accepted_per_position[i] += 1


@dataclass
class Generation:
    """One prompt's output and what the engine saw while producing it."""

    prompt_id: str
    prompt_tokens: int
    output_ids: List[int]
    wall_s: float  # request start to last token
    ttft_s: Optional[float]  # request start to first generated token
    acceptance: Optional[AcceptanceCounts]  # None without speculation or when the engine does not report it
    text: str = ""


@dataclass
class ResolvedModels:
    """Local paths (or hub ids) of everything the run loads, after packaged/registry names are resolved."""

    target: str
    draft: Optional[str] = None


class Backend(Protocol):
    """An engine loaded for one (model, speculation) configuration."""

    name: str

    def load(self) -> None: ...

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        """Generate for a batch of prompts (one call = one timed unit)."""
        ...

    def environment(self) -> Dict[str, Any]:
        """Engine facts worth recording (versions, device, threads, dtype)."""
        ...

    def close(self) -> None: ...
