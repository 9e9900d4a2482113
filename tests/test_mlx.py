"""mlx-lm backend: mapping, validation, acceptance rebuilt from from_draft flags. The engine on tiny real models is in
tests/integration/test_mlx_engine.py."""

from __future__ import annotations

import pytest

from conftest import native_config
from specsweep.backends.mlx import config as mlx_config
from specsweep.backends.mlx.mapping import DraftFlagMismatch, acceptance_from_flags
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import ConfigError, validate

register_configs()


def compose_cfg(*overrides: str):
    return compose_config(["backend=mlx", *overrides])


def test_native_config():
    cfg = compose_cfg("speculation.num_speculative_tokens=3", "generation.max_new_tokens=16", "dry_run=true")
    validate(cfg)  # the mapping's own rules (a dry run does not ask for mlx: this runs on the GPU stack too)
    assert native_config(cfg) == {
        "stream_generate": {"max_tokens": 16, "num_draft_tokens": 3},
        "sampler": {"temp": 0.0},
        "seed": 0,
    }
    cfg = compose_cfg("speculation=none", "generation.temperature=0.5", "generation.top_p=0.8", "generation.seed=3")
    assert native_config(cfg) == {
        "stream_generate": {"max_tokens": 64},
        "sampler": {"temp": 0.5, "top_p": 0.8},
        "seed": 3,
    }
    cfg = compose_cfg("+speculation.backend_overrides.prefill_step_size=128")
    assert native_config(cfg)["stream_generate"]["prefill_step_size"] == 128


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["speculation=ngram"],
            r"^speculation.method='ngram' is invalid: expected a method backend=mlx supports: none, draft_model",
        ),
        (["generation.batch_size=4"], r"^generation.batch_size=4 is invalid: expected 1 on backend=mlx"),
        (["backend.dtype=int8"], r"^backend.dtype='int8' is invalid"),
        (["backend.device=cuda"], r"^backend.device='cuda' is invalid: expected one of cpu, gpu"),
        (["speculation.draft_tp_size=2"], r"^speculation.draft_tp_size=2 is invalid"),
        (
            ["+speculation.backend_overrides.max_kv_size=10"],
            r"^speculation.backend_overrides.max_kv_size=10 is invalid: expected one of prefill_step_size",
        ),
    ],
)
def test_invalid_configs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(*overrides))


def test_missing_mlx_fails_validation(monkeypatch):
    monkeypatch.setattr(mlx_config, "installed", lambda: False)
    with pytest.raises(
        ConfigError, match=r"^backend='mlx' is invalid: expected an installed mlx-lm: pip install mlx-lm"
    ):
        validate(compose_cfg())


def test_acceptance_from_flags_steps():
    T, F = True, False
    # k=3, max_tokens=10: accept 2 | accept 0 | accept 3 | 2 left: draft 2, accept 2, max_tokens reached
    # (no target token)
    counts = acceptance_from_flags([T, T, F, F, T, T, T, F, T, T], k=3, max_tokens=10)
    assert (counts.drafted, counts.accepted, counts.num_drafts) == (3 + 3 + 3 + 2, 2 + 0 + 3 + 2, 4)
    assert counts.accepted_per_position == [3, 3, 1]
    # A stream that stopped at an EOS token among the drafts: the open step counts its drafted k and what it emitted.
    counts = acceptance_from_flags([T, F, T], k=3, max_tokens=16)
    assert (counts.drafted, counts.accepted, counts.num_drafts) == (6, 2, 2)
    # Near max_tokens the draft shrinks to what is left: 3, 2, then 1 token left.
    counts = acceptance_from_flags([F, F, F], k=4, max_tokens=3)
    assert (counts.drafted, counts.accepted, counts.num_drafts) == (3 + 2 + 1, 0, 3)
    with pytest.raises(DraftFlagMismatch):
        acceptance_from_flags([T, T, T], k=2, max_tokens=16)
