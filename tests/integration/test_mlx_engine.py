"""mlx-lm on tiny real models: acceptance derived from the draft's real forward calls, step_costs' timed forwards
on the cached prompt, and main.py end to end. Mapping and validation are in tests/test_mlx.py."""

from __future__ import annotations

import pytest

from conftest import native_config, results_in, run_main
from fakes import tiny_qwen2
from specsweep.backends.mlx import config as mlx_config
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import validate
from specsweep.session import Session

register_configs()
MLX_INSTALLED = mlx_config.installed()


@pytest.fixture(scope="module")
def other_tiny_model_dir(tmp_path_factory, packaged_tokenizer_dir):
    """A second random tiny Qwen2 with its own random lm_head (same tokenizer): a draft that almost never agrees.

    (The tied-embedding tiny model mostly repeats its input token; an untied random head does not.)"""
    return tiny_qwen2(
        tmp_path_factory.mktemp("tiny-qwen2-other"), packaged_tokenizer_dir, tie_word_embeddings=False, seed=1
    )


class CountingModel:
    """Passes everything to an mlx model and counts its forward calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def engine_for(target, draft, k: int, max_new_tokens: int):
    from specsweep.backends.mlx.backend import MlxBackend
    from specsweep.models.resolve import ResolvedModels

    cfg = compose_config(
        [
            "backend=mlx",
            f"model.target={target}",
            f"speculation.draft_model={draft}",
            f"speculation.num_speculative_tokens={k}",
            f"generation.max_new_tokens={max_new_tokens}",
        ]
    )
    validate(cfg)
    engine = MlxBackend(cfg, native_config(cfg), ResolvedModels(str(target), str(draft)), Session())
    engine.load()
    return engine


@pytest.mark.slow
@pytest.mark.skipif(not MLX_INSTALLED, reason="mlx-lm is not installed")
def test_engine_acceptance_matches_draft_calls(tiny_model_dir, other_tiny_model_dir):
    """Derived drafted counts equal the draft model's real forward calls; acceptance tracks draft quality."""
    from specsweep.core import Prompt

    prompt = Prompt("p0", "code", "Write a function that adds two numbers.")
    rates = {}
    for name, draft in (("same", tiny_model_dir), ("other", other_tiny_model_dir)):
        engine = engine_for(tiny_model_dir, draft, k=3, max_new_tokens=24)
        engine.draft = counter = CountingModel(engine.draft)
        gen = engine.generate([prompt])[0]
        counts = gen.acceptance
        # One prefill call (the prompt is shorter than prefill_step_size), then one call per drafted token.
        assert counter.calls - 1 == counts.drafted, (name, counter.calls, counts)
        assert len(gen.output_ids) == 24 and counts.accepted <= counts.drafted
        # output = per verification step (accepted + the target's token), the last step maybe cut at max_tokens
        assert counts.accepted + counts.num_drafts - 1 <= len(gen.output_ids) <= counts.accepted + counts.num_drafts
        assert 0 < gen.ttft_s <= gen.wall_s
        rates[name] = counts.accepted / counts.drafted
    assert rates["same"] > 0.8, rates  # the target drafting for itself: (nearly) every draft is accepted
    assert rates["other"] < 0.2, rates  # an unrelated random draft: (nearly) none


class RecordingModel(CountingModel):
    """Also records, per call, how many new tokens it was given and how long the cache already was."""

    def __init__(self, model):
        super().__init__(model)
        self.seen = []

    def __call__(self, inputs, cache=None, **kwargs):
        self.seen.append((inputs.shape[1], cache[0].offset if cache else None))
        return super().__call__(inputs, cache=cache, **kwargs)


@pytest.mark.slow
@pytest.mark.skipif(not MLX_INSTALLED, reason="mlx-lm is not installed")
def test_step_costs_time_forwards_of_n_new_tokens_on_the_cached_prompt_in_rounds(tiny_model_dir):
    from specsweep.core import Prompt

    engine = engine_for(tiny_model_dir, tiny_model_dir, k=3, max_new_tokens=8)
    engine.model, engine.draft = RecordingModel(engine.model), RecordingModel(engine.draft)
    prompt = Prompt("p0", "code", "Write a function that adds two numbers.")
    context = len(engine.encode(prompt))
    costs = engine.step_costs(prompt, 4, repeats=2)
    verify = costs["verify_s"]
    # raw medians (the cost model makes them non-decreasing, measure/cost_model.py)
    assert len(verify) == 4 and all(v > 0 for v in verify) and costs["draft_token_s"] > 0
    # the target: one prefill of the prompt per n, then 3 rounds (a warm-up and 2 timed) of n = 1..4 new tokens,
    # each on the prompt's cache trimmed back to its own length
    prefills, timed = engine.model.seen[:4], engine.model.seen[4:]
    assert prefills == [(context, 0)] * 4 and timed == [(n, context) for n in (1, 2, 3, 4)] * 3
    assert engine.draft.seen == [(context, 0)] + [(1, context)] * 3


@pytest.mark.slow
@pytest.mark.skipif(not MLX_INSTALLED, reason="mlx-lm is not installed")
def test_main_runs_mlx_draft_model(tmp_path, tiny_model_dir):
    proc = run_main(
        "backend=mlx",
        "speculation=draft_model",
        f"model.target={tiny_model_dir}",
        f"speculation.draft_model={tiny_model_dir}",
        "speculation.num_speculative_tokens=3",
        "generation.max_new_tokens=12",
        "dataset.num_prompts=2",
        "measurement.warmup=0",
        "measurement.repetitions=1",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (result,) = results_in(tmp_path)
    m = result["metrics"]
    assert result["status"] == "ok" and result["backend"] == "mlx"
    assert m["drafted_tokens"] > 0 and m["num_drafts"] > 0 and m["acceptance_rate"] > 0.8
    assert m["mean_acceptance_length"] == pytest.approx(1 + m["accepted_tokens"] / m["num_drafts"])
    assert m["ttft_s"] > 0 and m["baseline_tokens_per_s"] > 0
    assert result["lossless"]["checked"] and result["lossless"]["match_rate"] == 1.0
    assert result["environment"]["engine"] == "mlx-lm"
