"""The experiment config: one typed dataclass tree, composed by Hydra from the `conf/` groups.

Defaults live here and only here: a yaml file in `conf/` sets what differs from them. Closed sets are enums (a bad
value fails when the config is composed), ranges are declared on the field with `bounded`, and rules that span
several fields are each config's `check()`. `config.validate` runs them all, once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from specsweep.backends.base import BackendConfig
from specsweep.core import Choice, Problem
from specsweep.energy.config import EnergyConfig
from specsweep.fields import bounded
from specsweep.methods import METHOD_TABLE, Method, method_spec
from specsweep.tracking.config import LoggerConfig

MAX_SPECULATIVE_TOKENS = 64
NGRAM_METHODS = tuple(m.name for m in METHOD_TABLE.values() if m.ngram_sizes)
SPECULATION_FIELDS = (
    "num_speculative_tokens",
    "draft_model",
    "ngram_min",
    "ngram_max",
    "draft_tp_size",
    "synthetic_acceptance",
    "k_schedule",
)


@dataclass
class SpeculationConfig:
    """Unified speculative-decoding settings, mapped onto each backend's native API."""

    method: Method = Method.none  # one of specsweep.methods.METHOD_TABLE
    num_speculative_tokens: Optional[int] = bounded(None, ge=1, le=MAX_SPECULATIVE_TOKENS)  # k per verification step
    draft_model: Optional[str] = None  # draft LM or head (path, hub id, packaged:<name>); None: the model entry's
    ngram_min: Optional[int] = bounded(None, ge=1, null="the backend's default")  # smallest prompt n-gram matched
    ngram_max: Optional[int] = bounded(None, ge=1, null="the backend's default")  # largest prompt n-gram matched
    draft_tp_size: Optional[int] = bounded(None, ge=1, null="the target's")  # tensor-parallel degree of the draft
    # Verify with a known acceptance instead of the target's: each drafted token is accepted with this probability
    # (i.i.d., so position i has rate alpha^i) while the proposer and the target still run for real. Outputs are
    # not the target's; the speedup is what a draft of this cost would give at this acceptance (acceptance map).
    synthetic_acceptance: Optional[float] = bounded(None, ge=0.0, le=1.0, null="the target verifies (real acceptance)")
    # k per load: {from batch size: k}, e.g. {1: 4, 4: 2, 8: 0} (k=0: speculation off), mapped onto the engine's
    # own schedule (vLLM num_speculative_tokens_per_batch_size, TensorRT-LLM draft_len_schedule); k_by_load writes it.
    k_schedule: Dict[int, int] = field(default_factory=dict)  # empty: one fixed k (num_speculative_tokens)
    backend_overrides: Dict[str, Any] = field(default_factory=dict)  # merged verbatim into the native config

    def check(self, cfg) -> List[Problem]:
        """Which fields a method takes, k where the method needs one, and valid n-gram sizes."""
        row = method_spec(self.method)
        if row.name == "none":
            return [
                (f"speculation.{n}", getattr(self, n), "null when speculation.method=none")
                for n in SPECULATION_FIELDS
                if getattr(self, n) not in (None, {})
            ]
        problems = []
        if self.num_speculative_tokens is None and not row.k_optional:
            problems.append(
                ("speculation.num_speculative_tokens", None, f"an integer in [1, {MAX_SPECULATIVE_TOKENS}]")
            )
        if not row.ngram_sizes:
            allowed = f"null unless speculation.method is one of {', '.join(NGRAM_METHODS)}"
            problems += [
                (f"speculation.{n}", getattr(self, n), allowed)
                for n in ("ngram_min", "ngram_max")
                if getattr(self, n) is not None
            ]
        elif self.ngram_min is not None and self.ngram_max is not None and self.ngram_min > self.ngram_max:
            problems.append(("speculation.ngram_min", self.ngram_min, f"<= speculation.ngram_max ({self.ngram_max})"))
        if self.synthetic_acceptance is not None and self.num_speculative_tokens is None:
            problems.append(
                (
                    "speculation.synthetic_acceptance",
                    self.synthetic_acceptance,
                    "null unless num_speculative_tokens is set",
                )
            )
        if self.synthetic_acceptance is not None and not type(cfg.backend).synthetic_acceptance:
            problems.append(
                (
                    "speculation.synthetic_acceptance",
                    self.synthetic_acceptance,
                    f"null for backend={cfg.backend.name} (it cannot verify with a set acceptance; backend=pytorch "
                    "can, and vllm on a GPU)",
                )
            )
        problems += self._schedule_problems(cfg)
        if self.draft_model is not None and not row.takes_weights:
            problems.append(
                (
                    "speculation.draft_model",
                    self.draft_model,
                    f"null for method={row.name} (it takes no draft weights)",
                )
            )
        return problems

    def _schedule_problems(self, cfg) -> List[Problem]:
        """k_schedule: starts at batch size 1, every k in [0, MAX], its largest k is num_speculative_tokens (the
        engines size their buffers for it), and the backend has a schedule to map it onto."""
        schedule = self.k_schedule
        if not schedule:
            return []
        name, shown = "speculation.k_schedule", dict(schedule)
        if not type(cfg.backend).k_schedule:
            return [
                (
                    name,
                    shown,
                    f"unset for backend={cfg.backend.name} (it has no per-batch-size draft length; "
                    "vllm, vllm_server and tensorrt have one)",
                )
            ]
        if min(schedule, default=0) != 1 or any(b < 1 for b in schedule):
            return [(name, shown, "a map {batch size: k} whose smallest batch size is 1, e.g. {1: 4, 4: 2, 8: 0}")]
        if any(not 0 <= k <= MAX_SPECULATIVE_TOKENS for k in schedule.values()) or max(schedule.values()) == 0:
            return [(name, shown, f"k values in [0, {MAX_SPECULATIVE_TOKENS}], at least one above 0")]
        if self.num_speculative_tokens != max(schedule.values()):
            allowed = f"{max(schedule.values())}, the schedule's largest k (the engine sizes its drafts for it)"
            return [("speculation.num_speculative_tokens", self.num_speculative_tokens, allowed)]
        return []


@dataclass
class ModelConfig:
    """A target model and the proposers known to work with it."""

    name: str = MISSING  # short id used in results, tags and reports
    target: str = MISSING  # local dir, hub id, or packaged:<name> (installed by scripts/setup.sh)
    draft: Optional[str] = None  # recommended same-tokenizer draft LM for method=draft_model
    heads: Dict[str, str] = field(default_factory=dict)  # method -> head weights (eagle, eagle3, medusa, ...)


class DatasetName(Choice):
    builtin = "builtin"  # the shipped prompt mix
    jsonl = "jsonl"  # a local file


@dataclass
class DatasetConfig:
    """Which prompts to generate from."""

    name: DatasetName = DatasetName.builtin  # builtin (shipped prompt set) | jsonl (a local file)
    path: Optional[str] = None  # jsonl only: {"prompt", "category"} lines or Spec-Bench question.jsonl
    num_prompts: Optional[int] = bounded(7, ge=1, null="all prompts")  # sample size drawn with `seed`
    seed: int = 0  # sampling seed
    categories: List[str] = field(default_factory=list)  # keep only these categories; empty: all

    def check(self, cfg) -> List[Problem]:
        from pathlib import Path

        if self.name != DatasetName.jsonl:
            return []
        if not self.path:
            return [("dataset.path", self.path, "a path to a .jsonl file for dataset=jsonl")]
        if not Path(self.path).expanduser().is_file():
            return [("dataset.path", self.path, "an existing .jsonl file")]
        return []


@dataclass
class GenerationConfig:
    """How each prompt is decoded."""

    max_new_tokens: int = bounded(64, ge=1)  # tokens generated per prompt
    temperature: float = bounded(0.0, ge=0)  # 0: greedy (lossless check applies); > 0: sampling
    top_p: float = bounded(1.0, gt=0, le=1)  # nucleus sampling mass, used when temperature > 0
    seed: int = 0  # sampling seed
    chat_template: bool = True  # wrap prompts in the tokenizer's chat template
    batch_size: int = bounded(1, ge=1)  # prompts per generate call (speculation's benefit falls as it grows)
    # Served backends (vllm_server, mlx_server, llamacpp_server) only: the load a server is measured under.
    concurrency: int = bounded(1, ge=1)  # most requests in flight at once
    # Poisson arrivals at this many requests/s; null: each request is sent as soon as the concurrency allows
    request_rate: Optional[float] = bounded(None, gt=0, null="as fast as the concurrency allows")

    def check(self, cfg) -> List[Problem]:
        """Load settings only mean something to a served backend, batches only to an offline one: the backend's
        kind says which apply."""
        return cfg.backend.generation_problems(cfg)


class Pairing(Choice):
    """How the baseline's generations are paired with the speculative ones."""

    auto = "auto"  # interleaved where the backend can hold both engines at once, else phased
    interleaved = "interleaved"  # alternate baseline and speculative per prompt and repetition (who goes first too)
    phased = "phased"  # every baseline generation, then every speculative one (a baseline may be reused in a sweep)


@dataclass
class MeasurementConfig:
    """How runs are timed and compared."""

    warmup: int = bounded(1, ge=0)  # unmeasured generations per engine before timing
    repetitions: int = bounded(2, ge=1)  # measured passes over the prompt set (with target_ci: the fewest)
    # Measure until the paired speedup's interval (over repetitions, measure/precision.py) has at most this half-width
    # relative to its mean, e.g. 0.03, or max_repetitions are spent (interleaved pairing adds rounds; phased reports)
    target_ci: Optional[float] = bounded(None, gt=0, lt=1, null="exactly measurement.repetitions")
    max_repetitions: int = bounded(12, ge=1)  # the most repetitions target_ci may take
    baseline: bool = True  # also time a no-speculation run on the same prompts (for speedup)
    pairing: Pairing = Pairing.auto  # interleaved: machine drift lands on both sides of the speedup alike
    cost_model: bool = False  # also time target/draft forwards and predict speedup for every k <= this k (theory.curve)
    # More k values measured in this job's interleaved round robin, each against the same baseline as the job's own k
    # (result.json `compared`): how best_k verifies its candidates without a baseline apiece
    compare_k: List[int] = field(default_factory=list)
    lossless_check: bool = True  # compare speculative greedy output with the baseline's
    # Served backends: goodput counts the requests that meet both limits (null: no limit on that one)
    slo_ttft_s: Optional[float] = bounded(None, gt=0, null="no TTFT limit")  # time to first token, seconds
    slo_tpot_s: Optional[float] = bounded(None, gt=0, null="no TPOT limit")  # time per output token, seconds
    # Served backends: the largest share of a load run's requests that may fail or time out before the job fails
    # (0: any failed request fails it, since a window with missing requests biases every figure; the ok requests'
    # figures are reported with the failure count and rate beside them)
    max_failure_rate: float = bounded(0.0, ge=0, le=1)
    confidence: float = bounded(0.95, gt=0, lt=1)  # level of the reported intervals
    # result paths returned to the sweeper (one: a float; several: a tuple), e.g. metrics.tokens_per_s
    objective: List[str] = bounded(factory=lambda: ["metrics.tokens_per_s"], min_items=1)

    def check(self, cfg) -> List[Problem]:
        """Each objective must name a number result.json holds (a typo would make every trial NaN)."""
        from specsweep.results.types import numeric_paths

        known = numeric_paths()
        allowed = "a numeric result path such as metrics.tokens_per_s, metrics.tpot_s or energy.joules_per_token"
        problems = [
            ("measurement.objective", path, f"{allowed} (see docs/result.schema.json)")
            for path in self.objective
            if path not in known
        ]
        if self.target_ci is not None and self.max_repetitions < self.repetitions:
            allowed = f">= measurement.repetitions ({self.repetitions}) with measurement.target_ci"
            problems.append(("measurement.max_repetitions", self.max_repetitions, allowed))
        blocker = cfg.backend.pairing_blocker()
        if self.pairing == Pairing.interleaved and blocker:
            allowed = f"auto or phased on backend={cfg.backend.name} ({blocker})"
            problems.append(("measurement.pairing", str(self.pairing), allowed))
        return problems + self._compare_problems(cfg, blocker)

    def _compare_problems(self, cfg, blocker: Optional[str]) -> List[Problem]:
        """compare_k shares the job's interleaved baseline: it needs one, and k values the job does not measure."""
        if not self.compare_k:
            return []
        spec, value = cfg.speculation, list(self.compare_k)
        why = None
        if spec.method == "none" or not self.baseline:
            why = "[] without speculation or measurement.baseline (the k values share the job's baseline)"
        elif blocker or self.pairing == Pairing.phased:
            why = f"[] with phased pairing: the k values take turns with one baseline ({blocker or 'pairing=phased'})"
        elif spec.k_schedule:
            why = "[] with speculation.k_schedule (a schedule is compared as its own job)"
        elif any(k < 1 or k > 64 for k in value) or len(set(value)) < len(value):
            why = "distinct k values in [1, 64]"
        elif spec.num_speculative_tokens in value:
            why = (
                f"k values other than the job's own (speculation.num_speculative_tokens={spec.num_speculative_tokens})"
            )
        return [("measurement.compare_k", value, why)] if why else []


@dataclass
class ExperimentConfig:
    """Root of the composed config: everything one experiment needs."""

    backend: BackendConfig = MISSING
    speculation: SpeculationConfig = field(default_factory=SpeculationConfig)
    model: ModelConfig = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    measurement: MeasurementConfig = field(default_factory=MeasurementConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    dry_run: bool = False  # print the native engine config this run would build, then stop
    force: bool = False  # rerun even when this config already has an ok result in the sweep

    def with_k(self, k: int) -> ExperimentConfig:
        """A copy at another k, comparing nothing itself: one of measurement.compare_k's engines."""
        import copy

        other = copy.deepcopy(self)
        other.speculation.num_speculative_tokens, other.measurement.compare_k = k, []
        return other
