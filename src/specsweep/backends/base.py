"""The backend contract: what a backend declares, what its engine implements, and what a generation returns.

A backend is two classes:
- its **declaration**, a `BackendConfig` subclass in `backends/<name>/config.py` (light: no engine import): the config
  fields, the methods it runs, its cross-field checks, the pure `native_config(cfg, models)` mapping, and `engine`,
  the dotted path of its engine class;
- its **engine**, a `Backend` subclass in `backends/<name>/backend.py`, imported only when a run builds it.

Backends generate and count; measurement, results and tracking live elsewhere and never leak in here.
"""

from __future__ import annotations

import resource
from abc import ABC, abstractmethod
from dataclasses import dataclass
from statistics import median
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple

__all__ = ["AcceptanceCounts", "Generation", "Problem", "Prompt", "ResolvedModels"]  # re-exported for plugins

from omegaconf import MISSING

from specsweep.core import AcceptanceCounts, Choice, Generation, Problem, Prompt
from specsweep.models.resolve import ResolvedModels

# dtypes whose batched verification is not bit-exact with one-token decoding.
NOT_BIT_EXACT = ("bfloat16", "float16")


class Dtype(Choice):
    """Weight and activation dtypes a backend can be asked for."""

    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"  # bit-exact between batched verification and one-token decoding


class DtypeOrAuto(Choice):
    """Dtypes for engines that can also pick the checkpoint's own (`auto`)."""

    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


@dataclass(frozen=True)
class AdaptiveDraft:
    """An engine's own way of choosing the draft length as it goes, measured beside the best fixed k (best_k)."""

    name: str
    backend_overrides: Dict[str, Any]  # the speculation.backend_overrides that switch it on
    k: str  # what speculation.num_speculative_tokens means for it: "start" (the first length) or "cap" (the most)
    about: str  # one line: what the engine does

    def overrides(self) -> List[str]:
        """The Hydra overrides that switch it on in a job."""
        return [f"++speculation.backend_overrides.{key}={value}" for key, value in self.backend_overrides.items()]


@dataclass
class BackendConfig:
    """A backend's declaration. Subclass it (a dataclass) with the backend's fields and override the methods below;
    the registry (`specsweep.backends.registry`) is built from these subclasses."""

    engine: ClassVar[str] = ""  # dotted path of the engine (a `Backend` subclass), imported only when built
    # Installed distributions whose versions change what this backend measures: they enter the reuse key
    # (results.validity), so a result is measured again after its engine is upgraded.
    distributions: ClassVar[Tuple[str, ...]] = ()
    # Why this backend cannot hold a baseline and a speculative engine at once (None: it can, so their generations
    # are interleaved; see measurement.pairing). The default is the safe answer for a backend that has not said.
    single_engine_reason: ClassVar[Optional[str]] = "the backend does not declare that it can hold two engines at once"
    # How many measured no-speculation baselines a process keeps for later jobs with the same key (measure/baseline.py):
    # offline, the last one; a served backend pairs each load level with its own (ServedBackendConfig keeps more).
    kept_baselines: ClassVar[int] = 1
    # Whether the engine can verify drafts with a set acceptance probability while its proposer and target run for
    # real (speculation.synthetic_acceptance; vLLM's rejection_sample_method="synthetic").
    synthetic_acceptance: ClassVar[bool] = False
    # Whether the engine takes a draft length per batch size (speculation.k_schedule).
    k_schedule: ClassVar[bool] = False

    name: str = MISSING  # backend id, as chosen with `backend=<name>`

    def pairing_blocker(self) -> Optional[str]:
        """Why this job cannot interleave its baseline with the speculative generations (None: it can). The class's
        `single_engine_reason`, unless a backend's own settings decide (llama.cpp: its threads' wait policy)."""
        return type(self).single_engine_reason

    @classmethod
    def backend_name(cls) -> str:
        return cls.__dataclass_fields__["name"].default

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        """The speculation methods this backend maps (what the installed engine offers, where it can tell)."""
        return ("none",)

    @classmethod
    def adaptive_drafts(cls, method: str) -> Tuple[AdaptiveDraft, ...]:
        """The engine's own adaptive draft lengths for this method (none by default)."""
        return ()

    def check(self, cfg) -> List[Problem]:
        """Rules that involve more than one field or the installed engine (bounds are declared on the fields)."""
        return []

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        """The engine's own configuration for this run, as plain data (what --dry-run prints). Pure: no I/O."""
        raise NotImplementedError

    def generation_problems(self, cfg) -> List[Problem]:
        """The generation settings this kind of backend cannot honour. Offline: the load settings describe a server's
        load (served backends override this: `backends.served_config`)."""
        from specsweep.backends import registry
        from specsweep.backends.served_config import ServedBackendConfig

        served = ", ".join(n for n, c in registry().items() if issubclass(c, ServedBackendConfig))
        why = f"on backend={self.name}: load settings need a served backend ({served})"
        generation = cfg.generation
        problems = (
            [("generation.concurrency", generation.concurrency, f"1 {why}")] if generation.concurrency != 1 else []
        )
        if generation.request_rate is not None:
            problems.append(("generation.request_rate", generation.request_rate, f"null {why}"))
        return problems

    def load_identity(self, generation) -> Dict[str, Any]:
        """The load a job ran under, as its result's identity fields (null: an offline backend has none)."""
        return {"concurrency": None, "request_rate": None}


def time_in_rounds(timers: Dict[Any, Callable[[], float]], repeats: int) -> Dict[Any, float]:
    """For the cost model (`Backend.step_costs`): call every timer once per round, for a warm-up round and then
    `repeats` rounds, and return each timer's median. Rounds, not one timer's series after another's, so a machine
    that speeds up or slows down during the timing shifts every timer alike."""
    samples: Dict[Any, List[float]] = {key: [] for key in timers}
    for _ in range(repeats + 1):
        for key, timer in timers.items():
            samples[key].append(timer())
    return {key: median(values[1:]) for key, values in samples.items()}


def encode_prompt(tokenizer, text: str, chat_template: bool) -> List[int]:
    """Token ids of one user turn: through the tokenizer's chat template when asked and present, else plain text."""
    if chat_template and getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        # transformers gives a BatchEncoding; mlx-lm's TokenizerWrapper gives the ids whatever return_dict says
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    return list(tokenizer.encode(text))


class Backend(ABC):
    """An engine loaded for one (model, speculation) configuration.

    `generate` is one timed unit; the runner brackets it with `synchronize()` so a window ends when the device does.
    """

    name: ClassVar[str] = ""

    def __init__(self, cfg, native: Dict[str, Any], models: ResolvedModels, session):
        self.settings = cfg.backend  # this backend's own settings (its BackendConfig declaration's values)
        self.generation = cfg.generation
        self.method = cfg.speculation.method
        self.native = native
        self.models = models
        self.session = session  # specsweep.session.Session: where state that outlives the job is kept
        self.tokenizer: Any = None

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        """Generate for a batch of prompts (one call = one timed unit)."""

    @abstractmethod
    def environment(self) -> Dict[str, Any]:
        """Engine facts worth recording (versions, device, threads, dtype)."""

    def close(self) -> None:
        """Release what this engine holds for this job (kept state stays in the session)."""

    def encode(self, prompt: Prompt) -> List[int]:
        return encode_prompt(self.tokenizer, prompt.text, self.generation.chat_template)

    def synchronize(self) -> None:
        """Wait until the device has finished queued work (a no-op where generate() already blocks)."""

    def begin_window(self) -> None:
        """Called before a timed generate() call, outside its timing (a server's counters are read here)."""

    def window_acceptance(self) -> Optional[AcceptanceCounts]:
        """The acceptance counts of the timed generate() call since begin_window(), read after its timing ends, for
        engines that count a window rather than each generation (a server); None where each Generation carries
        its own."""
        return None

    def window_failures(self) -> List[Any]:
        """The requests of the last timed generate() call that failed or timed out, each with `prompt_id`, `outcome`
        and `error` (a server's load-run records); none offline, where a failure raises."""
        return []

    # Why this engine's acceptance counts are refused (counters that went backwards, a /metrics that stopped
    # answering): the measurement then reports none rather than a partial or wrong sum. None: nothing refused.
    acceptance_refused: Optional[str] = None

    def peak_memory(self) -> Dict[str, Any]:
        """Peak memory and where it was read; engines that know their device memory override this."""
        return {
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_memory_source": "process peak RSS since start (includes every model loaded in this process)",
            "peak_memory_per_device_mb": None,
        }

    # --- what differs between kinds of engine (offline, served), with the offline answer -------------------------

    def timed_batches(self, prompts: List[Prompt]) -> List[List[Prompt]]:
        """The prompts as the runner times them, one generate() call (one timed window) per batch: offline,
        generation.batch_size at a time (a served engine sends every prompt in one load run)."""
        size = self.generation.batch_size
        return [prompts[i : i + size] for i in range(0, len(prompts), size)]

    def acceptance_facts(self) -> Dict[str, Optional[str]]:
        """Where the acceptance counts come from, or why a speculative job has none: {"acceptance_source",
        "acceptance_unavailable_reason"}. None and None here: each Generation carries its own counts."""
        return {"acceptance_source": None, "acceptance_unavailable_reason": None}

    def extra_sections(self) -> Tuple[str, ...]:
        """The result.json sections this kind of engine adds, by name (none here; a served engine adds "serving").
        The measurement builds each from its phases and this engine's facts (measure/summary.py), so an engine
        names a section and never imports the measurement."""
        return ()

    # Why the draft/target cost ratio c of the theory section is not measured for this engine's jobs (None: it is).
    no_cost_ratio: ClassVar[Optional[str]] = None

    # --- the cost model's timed forwards (measure/cost_model.py) ---------------------------------------------------

    # How step_costs times its forwards, as the cost curve's `source` says it ({repeats}: the rounds timed).
    step_timing: ClassVar[str] = (
        "t_verify(n), t_draft: median of {repeats} rounds of timed forwards (after one warm-up round; every round "
        "times each n once) over n new tokens on the first prompt's cached context"
    )

    def step_costs(self, prompt: Prompt, n_max: int, repeats: int = 7) -> Dict[str, Any]:
        """Timed forwards, as raw medians: {"verify_s": [t_verify(n) for n = 1..n_max], "draft_token_s": t_draft
        (None: no draft model forward to time), "timing": how (`step_timing`)}. The cost model post-processes them
        (measure/cost_model.py). A template: engines supply `forward_timers` (or, timing elsewhere, override
        `timed_forwards`); those that cannot time one forward of the target raise NotImplementedError with why."""
        medians = self.timed_forwards(prompt, n_max, repeats)
        return {
            "verify_s": [medians[n] for n in range(1, n_max + 1)],
            "draft_token_s": medians.get("draft"),
            "timing": self.step_timing.format(repeats=repeats),
        }

    def timed_forwards(self, prompt: Prompt, n_max: int, repeats: int) -> Dict[Any, float]:
        """The median seconds of every `forward_timers` timer, timed in rounds (`time_in_rounds`). An engine that
        times in another process (vLLM's worker) overrides this instead."""
        return time_in_rounds(self.forward_timers(prompt, n_max), repeats)

    def forward_timers(self, prompt: Prompt, n_max: int) -> Dict[Any, Callable[[], float]]:
        """Callables that time one forward each and return its seconds: n (1..n_max) -> the target over n new tokens
        after the prompt's cached context, and "draft" -> the draft model over 1 new token (where there is one)."""
        raise NotImplementedError(f"backend={self.name} cannot time single target forwards")

    def lossless_note(self) -> Optional[str]:
        """Why greedy outputs may legitimately differ from the baseline's (None when they must match)."""
        dtype = getattr(self.settings, "dtype", None)
        if str(dtype) in NOT_BIT_EXACT:
            return (
                f"{dtype} is not bit-exact between batched verification and one-token decoding: "
                "greedy outputs may diverge from the baseline; float32 matches exactly"
            )
        return None
