"""TensorRT-LLM: the unified config -> LLM API mapping, per method and version, checked against the documented API
(TensorRT-LLM's `llmapi/llm_args.py` in 1.2.1 and its API pages for 1.3.0rc27 to 1.4.0rc1, as listed in
docs/tensorrt.md), the validation rules, and the missing-package path of main.py."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import native_config, run_main
from specsweep.backends.tensorrt import config as trt_config
from specsweep.backends.tensorrt import mapping
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import ConfigError, validate

register_configs()

HEAD = "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"
TRT_INSTALLED = importlib.util.find_spec("tensorrt_llm") is not None


def compose_cfg(*overrides: str, dry_run: bool = True):
    cfg = compose_config(["backend=tensorrt", "model=llama-3.1-8b", *overrides])
    cfg.dry_run = dry_run
    return cfg


@pytest.fixture
def not_installed(monkeypatch):
    """Map as on a machine without tensorrt_llm, whatever this one has."""
    monkeypatch.setattr(trt_config, "installed_version", lambda: None)


def native(*overrides: str):
    cfg = compose_cfg(*overrides)
    validate(cfg)
    return native_config(cfg)


def spec_of(*overrides: str):
    n = native(*overrides)
    return n["speculative_config"]["class"], n["speculative_config"]["kwargs"], n


# Every method, both API generations: class, YAML decoding_type and exact kwargs.
CASES = [
    # (overrides, version, class, decoding_type, kwargs)
    (
        ["speculation=draft_model", "speculation.num_speculative_tokens=4"],
        "1.2.1",
        "DraftTargetDecodingConfig",
        "DraftTarget",
        {"max_draft_len": 4, "speculative_model": "meta-llama/Llama-3.2-1B-Instruct"},
    ),
    (
        ["speculation=draft_model", "speculation.num_speculative_tokens=4"],
        "1.4.0rc1",
        "DraftTargetDecodingConfig",
        "DraftTarget",
        {"max_draft_len": 4, "speculative_model": "meta-llama/Llama-3.2-1B-Instruct"},
    ),
    (
        ["speculation=eagle3"],
        "1.2.1",
        "EagleDecodingConfig",
        "Eagle",
        {"max_draft_len": 3, "speculative_model": HEAD, "eagle3_one_model": True},
    ),
    (
        ["speculation=eagle3"],
        "1.3.0rc27",
        "Eagle3DecodingConfig",
        "Eagle3",
        {"max_draft_len": 3, "speculative_model": HEAD},
    ),
    (
        ["speculation=eagle3"],
        "1.4.0rc1",
        "Eagle3DecodingConfig",
        "Eagle3",
        {"max_draft_len": 3, "speculative_model": HEAD},
    ),
    (
        ["speculation=eagle", "backend.runtime=tensorrt"],
        "1.2.1",
        "EagleDecodingConfig",
        "Eagle",
        {"max_draft_len": 3, "speculative_model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"},
    ),
    (
        ["speculation=ngram"],
        "1.2.1",
        "NGramDecodingConfig",
        "NGram",
        {"max_draft_len": 4, "max_matching_ngram_size": 3},
    ),
    # 1.2.1 defaults max_matching_ngram_size to 0 and asserts > 0: it is always emitted.
    (
        ["speculation=ngram", "speculation.ngram_max=null", "speculation.ngram_min=null"],
        "1.2.1",
        "NGramDecodingConfig",
        "NGram",
        {"max_draft_len": 4, "max_matching_ngram_size": 2},
    ),
    (
        ["speculation=ngram"],
        "1.3.0rc29",
        "NGramDecodingConfig",
        "NGram",
        {"max_draft_len": 4, "max_matching_ngram_size": 3},
    ),
    # MTP's k is num_nextn_predict_layers (it overwrites max_draft_len, which is not set).
    (
        ["speculation=mtp", "speculation.num_speculative_tokens=3"],
        "1.2.1",
        "MTPDecodingConfig",
        "MTP",
        {"num_nextn_predict_layers": 3},
    ),
    (["speculation=mtp", "speculation.num_speculative_tokens=null"], "1.2.1", "MTPDecodingConfig", "MTP", {}),
    (
        ["speculation=mtp", "speculation.num_speculative_tokens=2"],
        "1.4.0rc1",
        "MTPDecodingConfig",
        "MTP",
        {"num_nextn_predict_layers": 2},
    ),
    (
        [
            "speculation=medusa",
            "backend.runtime=tensorrt",
            "speculation.draft_model=FasterDecoding/medusa-vicuna-7b-v1.3",
        ],
        "1.2.1",
        "MedusaDecodingConfig",
        "Medusa",
        {
            "max_draft_len": 3,
            "num_medusa_heads": 3,
            "medusa_choices": [[0], [0, 0], [0, 0, 0]],
            "speculative_model": "FasterDecoding/medusa-vicuna-7b-v1.3",
        },
    ),
    (
        ["speculation=lookahead", "backend.runtime=tensorrt"],
        "1.2.1",
        "LookaheadDecodingConfig",
        "Lookahead",
        {"max_window_size": 4},
    ),
    (
        ["speculation=lookahead", "backend.runtime=tensorrt", "speculation.num_speculative_tokens=7"],
        "1.4.0rc1",
        "LookaheadDecodingConfig",
        "Lookahead",
        {"max_window_size": 7},
    ),
]


@pytest.mark.parametrize("overrides,version,cls,decoding_type,kwargs", CASES)
def test_method_maps_to_documented_class_and_fields(not_installed, overrides, version, cls, decoding_type, kwargs):
    got_cls, got_kwargs, n = spec_of(*overrides, f"backend.trtllm_version={version}")
    assert (got_cls, got_kwargs) == (cls, kwargs)
    assert n["speculative_config"]["decoding_type"] == decoding_type
    assert n["speculative_config"]["import"] == f"tensorrt_llm.llmapi.{cls}"
    # Every emitted field exists on that class in that version (the classes reject unknown fields).
    assert set(got_kwargs) <= mapping.fields(cls, version)
    assert n["tensorrt_llm_version"] == version and n["version_source"].startswith("backend.trtllm_version")


def test_runtime_selects_the_llm_class_and_stats(not_installed):
    torch_side = native("speculation=eagle3")
    assert torch_side["llm"]["import"] == "tensorrt_llm.LLM"
    assert torch_side["llm"]["kwargs"] == {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "tensor_parallel_size": 1,
        "dtype": "auto",
        "enable_iter_perf_stats": True,
    }
    engine_side = native("speculation=lookahead", "backend.runtime=tensorrt")
    assert engine_side["llm"]["import"] == "tensorrt_llm._tensorrt_engine.LLM"
    assert "enable_iter_perf_stats" not in engine_side["llm"]["kwargs"]
    # The no-speculation baseline of an engine-runtime method runs on the engine runtime too.
    baseline = native("speculation=none", "backend.runtime=tensorrt")
    assert baseline["speculative_config"] is None and baseline["llm"]["import"] == "tensorrt_llm._tensorrt_engine.LLM"
    # TensorRT-LLM's own DraftTarget / NGram examples disable the overlap scheduler.
    assert native("speculation=ngram")["llm"]["kwargs"]["disable_overlap_scheduler"] is True
    assert "disable_overlap_scheduler" not in torch_side["llm"]["kwargs"]


def test_a_k_schedule_maps_to_draft_len_schedule_keyed_by_each_ranges_largest_batch(not_installed):
    _, kwargs, _ = spec_of(
        "speculation=ngram", "speculation.num_speculative_tokens=4", "+speculation.k_schedule={1:4,2:2,4:0}"
    )
    # batch 1: 4, batches 2-3: 2, above 3: nothing drafted (TensorRT-LLM's implicit 0 above the largest key)
    assert kwargs["draft_len_schedule"] == {1: 4, 3: 2}
    assert kwargs["max_draft_len"] == 4
    assert mapping.draft_len_schedule({1: 3, 8: 1}) == {7: 3, 2048: 1}  # a last k > 0 runs to the open end
    _, plain, _ = spec_of("speculation=ngram", "speculation.num_speculative_tokens=4")
    assert "draft_len_schedule" not in plain


def test_sampling_params(not_installed):
    assert native("speculation=eagle3", "generation.max_new_tokens=16")["sampling_params"] == {
        "max_tokens": 16,
        "temperature": 0.0,
    }
    sampled = native("speculation=eagle3", "generation.temperature=0.7", "generation.top_p=0.9", "generation.seed=5")
    assert sampled["sampling_params"] == {"max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "seed": 5}


def test_backend_overrides_are_merged_and_checked_per_version(not_installed):
    _, kwargs, _ = spec_of("speculation=eagle3", "+speculation.backend_overrides.eagle3_layers_to_capture=[1,2]")
    assert kwargs["eagle3_layers_to_capture"] == [1, 2]
    # The acceptance cut-off was renamed in 1.3 (length threshold -> rate threshold).
    _, kwargs, _ = spec_of("speculation=ngram", "+speculation.backend_overrides.acceptance_length_threshold=1.5")
    assert kwargs["acceptance_length_threshold"] == 1.5
    with pytest.raises(
        ConfigError,
        match=r"speculation.backend_overrides.acceptance_length_threshold=1.5 "
        r".*NGramDecodingConfig in TensorRT-LLM 1.4.0rc1",
    ):
        native(
            "speculation=ngram",
            "backend.trtllm_version=1.4.0rc1",
            "+speculation.backend_overrides.acceptance_length_threshold=1.5",
        )
    _, kwargs, _ = spec_of(
        "speculation=ngram",
        "backend.trtllm_version=1.4.0rc1",
        "+speculation.backend_overrides.acceptance_rate_threshold=0.3",
    )
    assert kwargs["acceptance_rate_threshold"] == 0.3
    # eagle3_one_model exists only in 1.2.x; moe_backend only from 1.4.0rc1; eagle_choices left Eagle3 in 1.4.0rc1.
    with pytest.raises(ConfigError, match="eagle3_one_model"):
        native(
            "speculation=eagle3",
            "backend.trtllm_version=1.3.0rc27",
            "+speculation.backend_overrides.eagle3_one_model=false",
        )
    with pytest.raises(ConfigError, match="moe_backend"):
        native(
            "speculation=eagle3",
            "backend.trtllm_version=1.3.0rc29",
            "+speculation.backend_overrides.moe_backend=CUTLASS",
        )
    assert (
        spec_of(
            "speculation=eagle3",
            "backend.trtllm_version=1.4.0rc1",
            "+speculation.backend_overrides.moe_backend=CUTLASS",
        )[1]["moe_backend"]
        == "CUTLASS"
    )
    assert "eagle_choices" in mapping.fields("Eagle3DecodingConfig", "1.3.0rc27")
    assert "eagle_choices" not in mapping.fields("Eagle3DecodingConfig", "1.4.0rc1")


def test_field_tables_match_the_reference():
    # 1.2.1 §2.2 and the 1.3.0rc27 / 1.4.0rc1 signatures in §2.3, spot-checked field by field.
    assert mapping.fields("MTPDecodingConfig", "1.2.1") >= {
        "num_nextn_predict_layers",
        "mtp_eagle_one_model",
        "relaxed_topk",
    }
    assert "mtp_eagle_one_model" not in mapping.fields("MTPDecodingConfig", "1.3.0rc27")
    assert {"use_dynamic_tree", "dynamic_tree_max_topK", "sa_config"} <= mapping.fields(
        "MTPDecodingConfig", "1.3.0rc27"
    )
    assert {"acceptance_window", "acceptance_length_threshold"} <= mapping.fields("DraftTargetDecodingConfig", "1.2.1")
    assert not {"acceptance_window", "acceptance_length_threshold"} & mapping.fields(
        "DraftTargetDecodingConfig", "1.3.0rc27"
    )
    assert {"greedy_sampling", "posterior_threshold", "eagle3_one_model"} <= mapping.fields(
        "EagleDecodingConfig", "1.2.1"
    )
    assert not {"greedy_sampling", "posterior_threshold", "eagle3_one_model"} & mapping.fields(
        "Eagle3DecodingConfig", "1.4.0rc1"
    )
    assert mapping.fields("LookaheadDecodingConfig", "1.2.1") - mapping.fields(
        "DraftTargetDecodingConfig", "1.2.1"
    ) == {"max_window_size", "max_ngram_size", "max_verification_set_size"}


@pytest.mark.parametrize(
    "version,api",
    [
        ("1.2.1", "1.2"),
        ("1.2.0", "1.2"),
        ("1.2.2", "1.2"),
        ("1.3.0rc27", "1.3"),
        ("1.3.0rc29", "1.3"),
        ("1.3.0", "1.3"),
        ("1.4.0rc1", "1.3"),
        ("1.3.0rc5", None),
        ("1.1.0", None),
        ("1.2.0rc3", None),
        ("not-a-version", None),
    ],
)
def test_version_to_api(version, api):
    assert mapping.api_for(version) == api


def test_installed_version_wins_over_the_config_field(monkeypatch):
    monkeypatch.setattr(trt_config, "installed_version", lambda: "1.4.0rc1")
    n = native("speculation=eagle3", "backend.trtllm_version=1.2.1")
    assert n["tensorrt_llm_version"] == "1.4.0rc1" and n["version_source"] == "installed tensorrt_llm"
    assert n["speculative_config"]["class"] == "Eagle3DecodingConfig"
    monkeypatch.setattr(trt_config, "installed_version", lambda: "1.3.0rc3")
    with pytest.raises(ConfigError, match=r"^tensorrt_llm \(installed\)='1.3.0rc3' is invalid"):
        native("speculation=eagle3")


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["speculation=medusa", "speculation.draft_model=x/medusa"],
            r"^backend.runtime='pytorch' is invalid: expected tensorrt for speculation.method=medusa",
        ),
        (
            ["speculation=eagle3", "backend.runtime=tensorrt"],
            r"^backend.runtime='tensorrt' is invalid: expected pytorch for speculation.method=eagle3",
        ),
        (
            ["speculation=eagle", "backend.runtime=tensorrt", "backend.trtllm_version=1.4.0rc1"],
            r"^speculation.method='eagle' is invalid: .*needs 1.2.x",
        ),
        (
            ["speculation=suffix"],
            r"^speculation.method='suffix' is invalid: expected a method backend=tensorrt supports",
        ),
        (["backend.runtime=triton"], r"^backend.runtime='triton' is invalid: expected one of pytorch, tensorrt"),
        (["backend.dtype=int4"], r"^backend.dtype='int4' is invalid"),
        (["backend.tensor_parallel_size=0"], r"^backend.tensor_parallel_size=0 is invalid"),
        (
            ["speculation.draft_tp_size=2"],
            r"^speculation.draft_tp_size=2 is invalid: expected null or 1 .*shares the target's mapping",
        ),
        (
            ["speculation=ngram", "speculation.ngram_min=2"],
            r"^speculation.ngram_min=2 is invalid: expected 1 or null on backend=tensorrt",
        ),
        (
            ["speculation=none", "+speculation.backend_overrides.max_window_size=3"],
            r"^speculation.backend_overrides=.* is invalid: expected empty",
        ),
        (
            ["backend.trtllm_version=0.21.0"],
            r"^backend.trtllm_version='0.21.0' is invalid: expected a TensorRT-LLM version this mapping knows",
        ),
    ],
)
def test_invalid_configs_fail_in_one_line(not_installed, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(compose_cfg(*overrides))
    assert "\n" not in str(err.value)


def test_missing_package_fails_validation_unless_dry_run(not_installed):
    cfg = compose_cfg("speculation=eagle3", dry_run=False)
    with pytest.raises(
        ConfigError,
        match=r"^backend='tensorrt' is invalid: expected an installed tensorrt_llm package "
        r"\(it needs Linux with an NVIDIA GPU",
    ):
        validate(cfg)
    validate(compose_cfg("speculation=eagle3", dry_run=True))


@pytest.mark.skipif(TRT_INSTALLED, reason="tensorrt_llm is installed here")
def test_main_without_tensorrt_llm_exits_2_in_one_line(tmp_path):
    proc = run_main("backend=tensorrt", "model=llama-3.1-8b", "speculation=eagle3", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install tensorrt_llm" in lines[0] and "NVIDIA GPU" in lines[0], proc.stderr
    assert not (tmp_path / "outputs").exists()  # nothing ran, nothing recorded


@pytest.mark.skipif(TRT_INSTALLED, reason="tensorrt_llm is installed here")
def test_main_dry_run_prints_native_config_without_the_package(tmp_path):
    proc = run_main(
        "backend=tensorrt", "model=llama-3.1-8b", "speculation=eagle3", "--dry-run", cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["native_config"]["speculative_config"] == {
        "class": "EagleDecodingConfig",
        "import": "tensorrt_llm.llmapi.EagleDecodingConfig",
        "decoding_type": "Eagle",
        "kwargs": {"max_draft_len": 3, "speculative_model": HEAD, "eagle3_one_model": True},
    }
    proc = run_main(
        "backend=tensorrt",
        "model=llama-3.1-8b",
        "speculation=eagle3",
        "backend.trtllm_version=1.4.0rc1",
        "--dry-run",
        cwd=tmp_path,
        timeout=120,
    )
    assert json.loads(proc.stdout)["native_config"]["speculative_config"]["class"] == "Eagle3DecodingConfig"


def test_iteration_stats_are_summed_into_acceptance_counts():
    from specsweep.backends.tensorrt.backend import spec_stats

    entries = [
        {
            "iter": 0,
            "specDecodingStats": {
                "numDraftTokens": 3,
                "numAcceptedTokens": 2,
                "numRequestsWithDraftTokens": 1,
                "acceptanceLength": 3.0,
            },
        },
        json.dumps(
            {
                "iter": 1,
                "specDecodingStats": {"numDraftTokens": 3, "numAcceptedTokens": 0, "numRequestsWithDraftTokens": 1},
            }
        ),
        {"iter": 2},  # the context (prefill) iteration carries no draft
    ]
    counts = spec_stats(entries)
    assert (counts.drafted, counts.accepted, counts.num_drafts) == (6, 2, 2)
    assert spec_stats([{"iter": 0}]) is None
