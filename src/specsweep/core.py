"""The vocabulary every layer shares: prompts, generations, acceptance counts, config problems, closed choices.

The ground floor: this module imports nothing of specsweep, so any package can import it without pulling in another
(the backends, the measurement, the results, the served path and validation all speak these types).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional, Tuple

# (field, value, what is allowed): one invalid setting, reported as one line (config.validate.ConfigError).
Problem = Tuple[str, Any, str]


class Choice(str, Enum):
    """A closed set of strings for a config field: OmegaConf accepts only the members when the config is composed.
    A member equals, hashes and prints as its plain value (`Dtype.float32 == "float32"`)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass
class Prompt:
    id: str
    category: str
    text: str


def _padded(values: List[int], width: int) -> List[int]:
    return list(values) + [0] * (width - len(values))


@dataclass
class AcceptanceCounts:
    """Raw speculative counters for one or more generations (vLLM's definitions).

    drafted: draft tokens proposed; accepted: draft tokens accepted (bonus token excluded);
    num_drafts: verification steps that carried at least one draft token;
    accepted_per_position[i]: steps whose draft token at position i was accepted.

    `a + b` sums two sets of counts (steps concatenated); `after - before` is the window between two readings of
    cumulative counters (a server's); `a.same_totals(b)` compares everything but the step list.
    """

    drafted: int = 0
    accepted: int = 0
    num_drafts: int = 0
    accepted_per_position: List[int] = field(default_factory=list)
    # (drafted, accepted) of each draft step in order, where the engine reports steps (empty where it reports totals)
    steps: List[Tuple[int, int]] = field(default_factory=list)

    def __add__(self, other: AcceptanceCounts) -> AcceptanceCounts:
        width = max(len(self.accepted_per_position), len(other.accepted_per_position))
        a, b = _padded(self.accepted_per_position, width), _padded(other.accepted_per_position, width)
        return AcceptanceCounts(
            self.drafted + other.drafted,
            self.accepted + other.accepted,
            self.num_drafts + other.num_drafts,
            [x + y for x, y in zip(a, b)],
            self.steps + other.steps,
        )

    def __sub__(self, before: AcceptanceCounts) -> AcceptanceCounts:
        width = max(len(self.accepted_per_position), len(before.accepted_per_position))
        a, b = _padded(self.accepted_per_position, width), _padded(before.accepted_per_position, width)
        return AcceptanceCounts(
            drafted=self.drafted - before.drafted,
            accepted=self.accepted - before.accepted,
            num_drafts=self.num_drafts - before.num_drafts,
            accepted_per_position=[x - y for x, y in zip(a, b)],
        )

    def same_totals(self, other: Optional[AcceptanceCounts]) -> bool:
        """Equal counts (per-position lists compared as if padded with zeros; the step lists are not compared)."""
        if other is None:
            return False
        d = self - other
        return d.drafted == d.accepted == d.num_drafts == 0 and not any(d.accepted_per_position)

    def went_backwards(self, before: AcceptanceCounts) -> bool:
        """Whether a counter is lower than in an earlier reading (the server restarted in between)."""
        d = self - before
        return min(d.drafted, d.accepted, d.num_drafts, *d.accepted_per_position, 0) < 0

    def record_step(self, drafted: int, accepted: int) -> None:
        """One verification step: `drafted` tokens proposed, the first `accepted` of them kept (0 drafted: not a
        draft step)."""
        if drafted <= 0:
            return
        self.steps.append((drafted, accepted))
        self.drafted += drafted
        self.accepted += accepted
        self.num_drafts += 1
        if len(self.accepted_per_position) < drafted:
            self.accepted_per_position.extend([0] * (drafted - len(self.accepted_per_position)))
        for i in range(accepted):
            self.accepted_per_position[i] += 1


def total_acceptance(counts: List[Optional[AcceptanceCounts]]) -> Optional[AcceptanceCounts]:
    """The sum of the known counts (None when none is known)."""
    known = [c for c in counts if c is not None]
    return sum(known[1:], known[0]) if known else None


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
    # Served backends: the engine's own output token count where output_ids are the streamed text re-encoded
    # (None: len(output_ids) is the count), the gaps between streamed chunks, and the wait for a concurrency slot
    token_count: Optional[int] = None
    itl_s: Optional[List[float]] = None
    queued_s: Optional[float] = None


def ratio(num: Optional[float], den: Optional[float]) -> Optional[float]:
    """num / den, or None where either is unknown or den is 0."""
    return num / den if num is not None and den else None


def one_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


# Where a mapped schedule's last range ends: engines carry the last k past it (vLLM) or are told it (TensorRT-LLM,
# whose default max_batch_size this is).
SCHEDULE_OPEN_END = 2048


def schedule_ranges(schedule: Dict[int, int], last: int) -> List[Tuple[int, int, int]]:
    """speculation.k_schedule {from batch size: k} -> inclusive (first, last, k) ranges, sorted by batch size; the last
    range ends at `last`."""
    starts = sorted(schedule)
    ends = [nxt - 1 for nxt in starts[1:]] + [max(last, starts[-1])]
    return [(start, end, schedule[start]) for start, end in zip(starts, ends)]
