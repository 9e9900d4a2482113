"""The PyTorch backend's mapping (`backends/pytorch/mapping.py`): the unified config -> transformers' generate()
arguments and the assistant's generation config."""

from __future__ import annotations

from specsweep.backends.pytorch.mapping import native_config
from specsweep.config.schema import GenerationConfig, SpeculationConfig


def test_pytorch_draft_model_k_goes_to_the_assistant_with_a_fixed_schedule():
    native = native_config(SpeculationConfig(method="draft_model", num_speculative_tokens=7), GenerationConfig())
    assert native["assistant_generation_config"] == {
        "num_assistant_tokens": 7,
        "num_assistant_tokens_schedule": "constant",
        "assistant_confidence_threshold": 0.0,
    }
    assert "prompt_lookup_num_tokens" not in native["generate_kwargs"]
    assert native["generate_kwargs"]["do_sample"] is False


def test_pytorch_ngram_maps_k_and_window_and_defaults_to_transformers_window():
    native = native_config(SpeculationConfig(method="ngram", num_speculative_tokens=3, ngram_max=4), GenerationConfig())
    assert native["generate_kwargs"]["prompt_lookup_num_tokens"] == 3
    assert native["generate_kwargs"]["max_matching_ngram_size"] == 4
    default = native_config(SpeculationConfig(method="ngram", num_speculative_tokens=3), GenerationConfig())
    assert default["generate_kwargs"]["max_matching_ngram_size"] == 2


def test_pytorch_sampling_and_backend_overrides_are_routed():
    spec = SpeculationConfig(
        method="draft_model",
        num_speculative_tokens=4,
        backend_overrides={"num_assistant_tokens_schedule": "heuristic", "repetition_penalty": 1.1},
    )
    native = native_config(spec, GenerationConfig(temperature=0.7, top_p=0.9))
    assert native["assistant_generation_config"]["num_assistant_tokens_schedule"] == "heuristic"
    assert native["generate_kwargs"]["repetition_penalty"] == 1.1
    assert native["generate_kwargs"]["do_sample"] is True and native["generate_kwargs"]["temperature"] == 0.7
