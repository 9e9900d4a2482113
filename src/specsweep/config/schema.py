"""The experiment config: one typed dataclass tree, composed by Hydra from the `conf/` groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from specsweep.energy.config import EnergyConfig
from specsweep.tracking.config import LoggerConfig

METHODS = (
    "none",
    "draft_model",
    "ngram",
    "eagle",
    "eagle3",
    "medusa",
    "mlp_speculator",
    "suffix",
    "mtp",
    "lookahead",
    "ngram_gpu",
    "dflash",
    "dspark",
)
# Methods whose proposer is a separate set of weights (a draft LM or a head) named by `draft_model`.
METHODS_WITH_DRAFT = ("draft_model", "eagle", "eagle3", "medusa", "mlp_speculator", "dflash")
# Methods that may take proposer weights but fall back to the target's own (DSpark defaults to the target).
METHODS_WITH_OPTIONAL_DRAFT = ("dspark",)
# Prompt-lookup methods, the ones with an n-gram window.
NGRAM_METHODS = ("ngram", "ngram_gpu")


@dataclass
class BackendConfig:
    """Fields every backend has; each backend extends it in `backends/<name>/config.py`."""

    name: str = MISSING  # backend id: pytorch | vllm | tensorrt | mlx


@dataclass
class SpeculationConfig:
    """Unified speculative-decoding settings, mapped onto each backend's native API."""

    method: str = "none"  # one of METHODS
    num_speculative_tokens: Optional[int] = None  # k: tokens proposed per verification step
    draft_model: Optional[str] = None  # draft LM or head (path, hub id, packaged:<name>); None: the model entry's
    ngram_min: Optional[int] = None  # smallest prompt n-gram matched (ngram); None: backend default
    ngram_max: Optional[int] = None  # largest prompt n-gram matched (ngram); None: backend default
    draft_tp_size: Optional[int] = None  # tensor-parallel degree of the draft; None: the target's
    backend_overrides: Dict[str, Any] = field(default_factory=dict)  # merged verbatim into the native config


@dataclass
class ModelConfig:
    """A target model and the proposers known to work with it."""

    name: str = MISSING  # short id used in results, tags and reports
    target: str = MISSING  # local dir, hub id, or packaged:<name> (installed by scripts/setup.sh)
    draft: Optional[str] = None  # recommended same-tokenizer draft LM for method=draft_model
    heads: Dict[str, str] = field(default_factory=dict)  # method -> head weights (eagle, eagle3, medusa, ...)


@dataclass
class DatasetConfig:
    """Which prompts to generate from."""

    name: str = "builtin"  # builtin (shipped prompt set) | jsonl (a local file)
    path: Optional[str] = None  # jsonl only: {"prompt", "category"} lines or Spec-Bench question.jsonl
    num_prompts: Optional[int] = None  # sample size drawn with `seed`; None: every prompt
    seed: int = 0  # sampling seed
    categories: List[str] = field(default_factory=list)  # keep only these categories; empty: all


@dataclass
class GenerationConfig:
    """How each prompt is decoded."""

    max_new_tokens: int = 64  # tokens generated per prompt
    temperature: float = 0.0  # 0: greedy (lossless check applies); > 0: sampling
    top_p: float = 1.0  # nucleus sampling mass, used when temperature > 0
    seed: int = 0  # sampling seed
    chat_template: bool = True  # wrap prompts in the tokenizer's chat template
    batch_size: int = 1  # prompts per generate call (speculation's benefit falls as it grows)


@dataclass
class MeasurementConfig:
    """How runs are timed and compared."""

    warmup: int = 1  # unmeasured generations per engine before timing
    repetitions: int = 3  # measured passes over the prompt set
    baseline: bool = True  # also time a no-speculation run on the same prompts (for speedup)
    lossless_check: bool = True  # compare speculative greedy output with the baseline's
    confidence: float = 0.95  # level of the reported intervals
    objective: List[str] = field(default_factory=lambda: ["metrics.tokens_per_s"])  # result paths returned


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
