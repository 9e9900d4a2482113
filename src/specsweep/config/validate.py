"""Every rule a config must satisfy, checked in one place before anything heavy loads."""

from __future__ import annotations

from pathlib import Path
from typing import List

from specsweep.backends import BACKENDS
from specsweep.config.schema import METHODS, METHODS_WITH_DRAFT, METHODS_WITH_OPTIONAL_DRAFT, NGRAM_METHODS
from specsweep.energy.config import check as energy_check
from specsweep.models.registry import draft_reference, reference_problem
from specsweep.tracking.config import check as logger_check

MAX_SPECULATIVE_TOKENS = 64


class ConfigError(ValueError):
    """An invalid config value: names the field, the value and what is allowed, on one line."""

    def __init__(self, field: str, value, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is invalid: expected {allowed}")


def _problems(cfg) -> List[tuple]:
    spec, gen, meas = cfg.speculation, cfg.generation, cfg.measurement
    if cfg.backend.name not in BACKENDS:
        return [("backend", cfg.backend.name, f"one of {', '.join(BACKENDS)}")]
    if spec.method not in METHODS:
        return [("speculation.method", spec.method, f"one of {', '.join(METHODS)}")]
    supported = BACKENDS[cfg.backend.name].supported_methods()
    if spec.method not in supported:
        return [
            (
                "speculation.method",
                spec.method,
                f"a method backend={cfg.backend.name} supports: {', '.join(supported)}",
            )
        ]
    problems = []
    k = spec.num_speculative_tokens
    if spec.method == "none":
        for name in ("num_speculative_tokens", "draft_model", "ngram_min", "ngram_max", "draft_tp_size"):
            if getattr(spec, name) is not None:
                problems.append((f"speculation.{name}", getattr(spec, name), "null when speculation.method=none"))
    elif spec.method not in ("mtp", "suffix", "dflash", "dspark") and k is None:  # these can take k from the model
        problems.append(("speculation.num_speculative_tokens", k, f"an integer in [1, {MAX_SPECULATIVE_TOKENS}]"))
    if k is not None and not 1 <= k <= MAX_SPECULATIVE_TOKENS:
        problems.append(("speculation.num_speculative_tokens", k, f"an integer in [1, {MAX_SPECULATIVE_TOKENS}]"))
    if spec.method in NGRAM_METHODS:
        for name in ("ngram_min", "ngram_max"):
            value = getattr(spec, name)
            if value is not None and value < 1:
                problems.append((f"speculation.{name}", value, "an integer >= 1 or null"))
        if spec.ngram_min is not None and spec.ngram_max is not None and spec.ngram_min > spec.ngram_max:
            problems.append(
                ("speculation.ngram_min", spec.ngram_min, f"<= speculation.ngram_max ({spec.ngram_max})")
            )
    else:
        for name in ("ngram_min", "ngram_max"):
            if getattr(spec, name) is not None:
                problems.append((f"speculation.{name}", getattr(spec, name), f"null unless speculation.method is one of {', '.join(NGRAM_METHODS)}"))
    if spec.draft_tp_size is not None and spec.draft_tp_size < 1:
        problems.append(("speculation.draft_tp_size", spec.draft_tp_size, "an integer >= 1 or null"))
    if spec.draft_model is not None and spec.method not in METHODS_WITH_DRAFT + METHODS_WITH_OPTIONAL_DRAFT:
        problems.append(
            ("speculation.draft_model", spec.draft_model, f"null for method={spec.method} (it takes no draft weights)")
        )
    if spec.method in METHODS_WITH_DRAFT and draft_reference(cfg) is None and not cfg.dry_run:
        where = "model.draft" if spec.method == "draft_model" else f"model.heads.{spec.method}"
        problems.append(
            ("speculation.draft_model", None, f"a draft for method={spec.method}: set speculation.draft_model or {where}")
        )
    problem = reference_problem(cfg.model.target)
    if problem:
        problems.append(("model.target", cfg.model.target, problem))
    draft = draft_reference(cfg)
    if draft:
        problem = reference_problem(draft)
        if problem:
            problems.append(("speculation.draft_model", draft, problem))

    if gen.max_new_tokens < 1:
        problems.append(("generation.max_new_tokens", gen.max_new_tokens, "an integer >= 1"))
    if gen.temperature < 0:
        problems.append(("generation.temperature", gen.temperature, "a number >= 0 (0 = greedy)"))
    if not 0 < gen.top_p <= 1:
        problems.append(("generation.top_p", gen.top_p, "a number in (0, 1]"))
    if gen.batch_size < 1:
        problems.append(("generation.batch_size", gen.batch_size, "an integer >= 1"))
    if meas.warmup < 0:
        problems.append(("measurement.warmup", meas.warmup, "an integer >= 0"))
    if meas.repetitions < 1:
        problems.append(("measurement.repetitions", meas.repetitions, "an integer >= 1"))
    if not 0 < meas.confidence < 1:
        problems.append(("measurement.confidence", meas.confidence, "a number in (0, 1)"))
    if not meas.objective:
        problems.append(("measurement.objective", list(meas.objective), "at least one result path, e.g. metrics.tokens_per_s"))

    problems.extend(_dataset_problems(cfg.dataset))
    problems.extend(energy_check(cfg.energy))
    problems.extend(logger_check(cfg.logger))
    problems.extend(BACKENDS[cfg.backend.name].check(cfg))
    return problems


def _dataset_problems(ds) -> List[tuple]:
    from specsweep.datasets import DATASETS, DatasetError, load_prompts

    if ds.name not in DATASETS:
        return [("dataset.name", ds.name, f"one of {', '.join(DATASETS)}")]
    if ds.name == "jsonl":
        if not ds.path:
            return [("dataset.path", ds.path, "a path to a .jsonl file for dataset=jsonl")]
        if not Path(ds.path).expanduser().is_file():
            return [("dataset.path", ds.path, "an existing .jsonl file")]
    if ds.num_prompts is not None and ds.num_prompts < 1:
        return [("dataset.num_prompts", ds.num_prompts, "an integer >= 1 or null for all prompts")]
    try:
        load_prompts(ds)
    except DatasetError as err:
        return [(err.field, err.value, err.allowed)]
    return []


def validate(cfg) -> None:
    """Raise ConfigError for the first problem found (all are cheap; nothing loads)."""
    problems = _problems(cfg)
    if problems:
        raise ConfigError(*problems[0])
