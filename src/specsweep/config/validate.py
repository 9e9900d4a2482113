"""Every rule a config must satisfy, checked in one pass before anything heavy loads.

Order: the declared bounds of every field (one generic routine), then each config's cross-field `check()`, the
backend's support for the method and its own `check()`, the model references, and last the prompts themselves.
The first problem found is raised as a one-line `ConfigError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import Enum
from typing import Any, List

from specsweep.backends import registry
from specsweep.core import Problem, Prompt
from specsweep.fields import bound_problems
from specsweep.methods import method_spec
from specsweep.models.resolve import draft_reference, reference_problem, weights_format

VALIDATED = "validate.prompts"  # session slot: the prompts of configs already validated in this process


class ConfigError(ValueError):
    """An invalid config value: names the field, the value and what is allowed, on one line."""

    def __init__(self, field: str, value: Any, allowed: str):
        value = value.value if isinstance(value, Enum) else value  # shown as the yaml spells it
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is invalid: expected {allowed}")


def _method_problems(cfg) -> List[Problem]:
    supported = type(cfg.backend).supported_methods()
    if cfg.speculation.method not in supported:
        allowed = f"a method backend={cfg.backend.name} supports: {', '.join(supported)}"
        return [("speculation.method", str(cfg.speculation.method), allowed)]
    return cfg.speculation.check(cfg)


def _model_problems(cfg) -> List[Problem]:
    problems = []
    row, draft = method_spec(cfg.speculation.method), draft_reference(cfg)
    if row.needs_weights and draft is None and not cfg.dry_run:
        allowed = f"a draft for method={row.name}: set speculation.draft_model or {row.weights_field()}"
        problems.append(("speculation.draft_model", None, allowed))
    if problem := reference_problem(cfg.model.target, weights_format(cfg)):
        problems.append(("model.target", cfg.model.target, problem))
    if draft and (problem := reference_problem(draft, weights_format(cfg))):
        problems.append(("speculation.draft_model", draft, problem))
    return problems


def problems(cfg) -> List[Problem]:
    """Every problem the cheap rules find (nothing loads); the prompts are checked by `validate`."""
    if cfg.backend.name not in registry():
        return [("backend", cfg.backend.name, f"one of {', '.join(registry())}")]
    return [
        *bound_problems(cfg),
        *_method_problems(cfg),
        *_model_problems(cfg),
        *cfg.dataset.check(cfg),
        *cfg.generation.check(cfg),
        *cfg.measurement.check(cfg),
        *cfg.energy.check(cfg),
        *cfg.logger.check(cfg),
        *cfg.backend.check(cfg),
        *_compared_problems(cfg),
    ]


def _compared_problems(cfg) -> List[Problem]:
    """Each of measurement.compare_k's k values must be a k this backend and method take (llama.cpp's prompt
    lookup, say, drafts at least ngram_max tokens): its problem, named as the compare_k value's. Listed last, so
    compare_k's own rules (measurement.check) and the job's own problems are reported first."""
    for k in cfg.measurement.compare_k:
        other = cfg.with_k(k)
        for _field, value, allowed in [*bound_problems(other), *_method_problems(other), *other.backend.check(other)]:
            why = f"k values the job's backend and method take (at k={k}: {_field}={value!r}, expected {allowed})"
            return [("measurement.compare_k", list(cfg.measurement.compare_k), why)]
    return []


def _load_prompts(cfg) -> List[Prompt]:
    from specsweep.datasets import DatasetError, load_prompts

    try:
        return load_prompts(cfg.dataset)
    except DatasetError as err:
        raise ConfigError(err.field, err.value, err.allowed) from None


def validate(cfg, session=None) -> List[Prompt]:
    """Raise ConfigError for the first problem found; return the run's prompts (loaded once while checking them).

    With a session, a config already validated in this process is not checked again.
    """
    validated = session.slot(VALIDATED, capacity=8) if session is not None else None
    key = json.dumps(asdict(cfg), sort_keys=True, default=str)
    if validated is not None and key in validated:
        return validated.get(key)
    found = problems(cfg)
    if found:
        raise ConfigError(*found[0])
    prompts = _load_prompts(cfg)
    if validated is not None:
        validated.put(key, prompts)
    return prompts
