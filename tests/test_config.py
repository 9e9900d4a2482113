"""Composition, typing and validation: every bad input is one line naming field, value and what is allowed (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_main
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import ConfigError, validate

register_configs()


def composed(*overrides: str):
    """Compose as main.py does: a bad group option, type or enum value raises the same one-line ConfigError."""
    return compose_config(list(overrides))


def test_default_composes_to_the_embedded_pair():
    cfg = composed()
    assert cfg.backend.name == "llamacpp" and str(cfg.backend.omp_wait_policy) == "passive"
    assert cfg.speculation.method == "draft_model" and cfg.speculation.num_speculative_tokens == 5
    assert cfg.model.target == "packaged:qwen2.5-coder-1.5b-instruct"
    assert cfg.model.draft == "packaged:qwen2.5-coder-0.5b-instruct"
    validate(cfg)


@pytest.mark.parametrize("option", sorted(p.stem for p in (REPO / "conf" / "speculation").glob("*.yaml")))
def test_every_speculation_option_composes_and_names_its_method(option):
    assert composed(f"speculation={option}").speculation.method == option


@pytest.mark.parametrize("option", sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")))
def test_every_model_entry_composes(option):
    cfg = composed(f"model={option}")
    assert cfg.model.name and cfg.model.target


def test_typo_key_fails_at_compose_time():
    with pytest.raises(Exception) as info:
        composed("speculation.num_speculative_tokenz=3")
    assert "num_speculative_tokenz" in str(info.value)


@pytest.mark.parametrize(
    "overrides, field, allowed",
    [
        (["speculation.method=bogus"], "speculation.method", "one of none, draft_model"),
        (
            ["backend=pytorch", "speculation=eagle"],
            "speculation.method",
            "backend=pytorch supports: none, draft_model, ngram",
        ),
        (["speculation.num_speculative_tokens=0"], "speculation.num_speculative_tokens", "[1, 64]"),
        (["speculation.num_speculative_tokens=1000"], "speculation.num_speculative_tokens", "[1, 64]"),
        (["speculation=ngram", "speculation.ngram_min=1", "speculation.ngram_max=0"], "speculation.ngram_max", ">= 1"),
        (
            ["speculation=ngram", "speculation.ngram_min=4", "speculation.ngram_max=2"],
            "speculation.ngram_min",
            "<= speculation.ngram_max (2)",
        ),
        (
            ["backend=pytorch", "speculation=ngram", "speculation.ngram_min=2"],
            "speculation.ngram_min",
            "transformers prompt lookup",
        ),
        (["speculation.synthetic_acceptance=0.5"], "speculation.synthetic_acceptance", "backend=pytorch can"),
        (
            ["backend=vllm", "speculation=draft_model", "speculation.synthetic_acceptance=1.5"],
            "speculation.synthetic_acceptance",
            "a number in [0, 1]",
        ),
        (
            ["backend=vllm", "speculation=none", "speculation.synthetic_acceptance=0.5"],
            "speculation.synthetic_acceptance",
            "null when speculation.method=none",
        ),
        (["+speculation.k_schedule={1:5,4:0}"], "speculation.k_schedule", "vllm, vllm_server and tensorrt have one"),
        (
            [
                "backend=vllm",
                "speculation=ngram",
                "speculation.num_speculative_tokens=4",
                "+speculation.k_schedule={2:4}",
            ],
            "speculation.k_schedule",
            "smallest batch size is 1",
        ),
        (
            [
                "backend=vllm",
                "speculation=ngram",
                "speculation.num_speculative_tokens=4",
                "+speculation.k_schedule={1:0}",
            ],
            "speculation.k_schedule",
            "at least one above 0",
        ),
        (
            [
                "backend=vllm",
                "speculation=ngram",
                "speculation.num_speculative_tokens=3",
                "+speculation.k_schedule={1:4}",
            ],
            "speculation.num_speculative_tokens",
            "4, the schedule's largest k",
        ),
        (
            [
                "backend=vllm",
                "speculation=ngram",
                "speculation.num_speculative_tokens=4",
                "speculation.k_schedule={1:4}",
            ],
            "speculation.k_schedule",
            "a map set with a leading '+'",
        ),
        (["model.draft=null"], "speculation.draft_model", "set speculation.draft_model or model.draft"),
        (
            ["speculation=ngram", "speculation.draft_model=packaged:qwen2.5-coder-0.5b-instruct"],
            "speculation.draft_model",
            "takes no draft",
        ),
        (
            ["speculation=none", "speculation.num_speculative_tokens=3"],
            "speculation.num_speculative_tokens",
            "null when",
        ),
        (["backend=pytorch", "model.target=/no/such/model"], "model.target", "existing model directory"),
        (["model.target=packaged:nope"], "model.target", "a packaged model"),
        (
            ["backend=pytorch", "speculation.draft_model=/no/such/draft"],
            "speculation.draft_model",
            "existing model directory",
        ),
        (["generation.max_new_tokens=0"], "generation.max_new_tokens", ">= 1"),
        (["generation.temperature=-0.5"], "generation.temperature", ">= 0"),
        (["backend=pytorch", "generation.batch_size=4"], "generation.batch_size", "batch-size-1 only"),
        (["measurement.repetitions=0"], "measurement.repetitions", ">= 1"),
        (["backend=pytorch", "backend.dtype=int3"], "backend.dtype", "bfloat16, float16, float32"),
        (["dataset=jsonl", "dataset.path=/no/such.jsonl"], "dataset.path", "an existing .jsonl file"),
        (["dataset.categories=[poetry]"], "dataset.categories", "categories present in the dataset"),
        (["measurement.objective=[metrics.tokens_per_sec]"], "measurement.objective", "a numeric result path"),
        (["dataset.num_prompts=0"], "dataset.num_prompts", "an integer >= 1, or null for all prompts"),
        (["measurement.pairing=alternate"], "measurement.pairing", "auto, interleaved, phased"),
        (
            ["backend=vllm", "speculation=ngram", "measurement.pairing=interleaved"],
            "measurement.pairing",
            "auto or phased on backend=vllm (one vLLM engine per process",
        ),
    ],
)
def test_invalid_configs_name_field_value_and_allowed(overrides, field, allowed):
    with pytest.raises(ConfigError) as info:
        validate(composed(*overrides))
    assert info.value.field == field
    message = str(info.value)
    assert "\n" not in message and field in message and allowed in message


def test_jsonl_dataset_errors_name_the_line(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "fine", "category": "qa"}) + "\n{not json\n")
    with pytest.raises(ConfigError) as info:
        validate(composed("dataset=jsonl", f"dataset.path={bad}"))
    assert f"{bad}:2" in str(info.value)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        validate(composed("dataset=jsonl", f"dataset.path={empty}"))
    missing_prompt = tmp_path / "noprompt.jsonl"
    missing_prompt.write_text(json.dumps({"category": "qa"}) + "\n")
    with pytest.raises(ConfigError, match="noprompt.jsonl:1"):
        validate(composed("dataset=jsonl", f"dataset.path={missing_prompt}"))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["speculation=foo"], "speculation='foo' is invalid: expected one of dflash, draft_model, dspark, eagle"),
        (["backend=foo"], "backend='foo' is invalid: expected one of"),
        (["backend=pytorch", "speculation=mtp"], "speculation.method='mtp' is invalid"),
        (["speculation.num_speculative_tokens=abc"], "speculation.num_speculative_tokens"),
        (["speculation.k=3"], "speculation.k"),
        (["generation.max_new_tokens=-1"], "generation.max_new_tokens=-1 is invalid"),
        (["dataset=jsonl"], "dataset.path"),
        # a key added with `+` is refused like any unknown key (Hydra would add it and the schema silently drop it)
        (["+generation.max_tokenz=5", "--dry-run"], "generation.max_tokenz=5 is invalid: expected an existing field"),
        (["+energy.bogus_field=1"], "energy.bogus_field=1 is invalid: expected an existing field; EnergyConfig has"),
        (
            ["-m", "hparams_search=draft_model_k", "+backend.bogus=1"],
            "backend.bogus=1 is invalid: expected an existing",
        ),
        (
            ["-m", "hparams_search=best_k", "speculation=none"],
            "expected a speculative method for hparams_search=best_k",
        ),
        (
            ["-m", "hparams_search=k_by_load", "backend=llamacpp"],
            "backend=llamacpp is invalid: expected a served backend for hparams_search=k_by_load",
        ),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_no_traceback(tmp_path, args, expected):
    proc = run_main(*args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()  # nothing ran, nothing was written


def test_declared_open_dicts_still_take_new_keys_with_plus(tmp_path):
    proc = run_main(
        "backend=pytorch",
        "speculation=ngram",
        "+speculation.backend_overrides.foo=1",
        "+model.heads.eagle=x",
        "--dry-run",
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout[proc.stdout.index("{") :])["native_config"]["generate_kwargs"]["foo"] == 1


def test_support_matrix_is_printed_from_the_registry(tmp_path):
    proc = run_main("--support-matrix", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0
    assert "draft_model" in proc.stdout and "pytorch" in proc.stdout


def test_dry_run_prints_native_config_without_loading(tmp_path):
    proc = run_main("backend=pytorch", "speculation=ngram", "--dry-run", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert printed["native_config"]["generate_kwargs"]["prompt_lookup_num_tokens"] == 4
    assert printed["native_config"]["generate_kwargs"]["max_matching_ngram_size"] == 3
    assert not (tmp_path / "outputs").exists()  # a dry run creates nothing


def test_dry_run_shows_the_native_config_even_before_a_head_is_chosen(tmp_path):
    proc = run_main("backend=tensorrt", "speculation=eagle3", "--dry-run", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert printed["native_config"]["speculative_config"]["class"] == "EagleDecodingConfig"
    assert "no draft weights set" in proc.stderr and "model.heads.eagle3" in proc.stderr
    real = run_main("backend=tensorrt", "speculation=eagle3", cwd=tmp_path, timeout=120)
    assert real.returncode == 2 and "model.heads.eagle3" in real.stderr


@pytest.mark.parametrize(
    "preset, objective",
    [
        ("draft_model_k", ["metrics.tokens_per_s"]),
        ("ngram_k_window", ["metrics.tokens_per_s"]),
        ("ngram_window", ["metrics.tokens_per_s"]),
        ("latency_energy", ["metrics.tpot_s", "energy.joules_per_token"]),
        ("best_k", ["metrics.speedup"]),
    ],
)
def test_hparams_search_presets_set_their_objective(preset, objective):
    cfg = composed(f"hparams_search={preset}")
    assert list(cfg.measurement.objective) == objective
    validate(cfg)


def test_newer_methods_validate_on_vllm_and_are_refused_elsewhere():
    validate(composed("backend=vllm", "speculation=ngram_gpu", "speculation.ngram_min=2", "speculation.ngram_max=4"))
    validate(composed("backend=vllm", "speculation=dspark"))
    with pytest.raises(ConfigError, match="model.heads.dflash"):
        validate(composed("backend=vllm", "speculation=dflash"))
    with pytest.raises(ConfigError, match="backend=pytorch supports"):
        validate(composed("backend=pytorch", "speculation=dflash"))


def test_help_speaks_for_specsweep_and_lists_only_real_options(tmp_path):
    proc = run_main("--help", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("specsweep: ") and "powered by Hydra" not in proc.stdout
    assert "schema" not in proc.stdout and "python main.py" in proc.stdout  # examples, no schema nodes
    listed = {
        line.split(":")[0].strip(): line.split(":", 1)[1].strip().split(", ")
        for line in proc.stdout.splitlines()
        if line.startswith("  ") and ":" in line and not line.strip().startswith("python")
    }
    for group in ("backend", "speculation", "model", "dataset", "energy", "logger", "hparams_search"):
        assert listed[group] == sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")), group
    for option in listed["backend"]:  # every listed option composes
        composed(f"backend={option}", "dry_run=true")


def test_a_single_run_validates_once_and_loads_the_prompts_once(monkeypatch):
    from specsweep import datasets
    from specsweep.session import Session

    loads = []
    real = datasets.load_prompts
    monkeypatch.setattr(datasets, "load_prompts", lambda ds: loads.append(ds) or real(ds))
    session, cfg = Session(), composed()
    first = validate(cfg, session)  # the pre-flight check before Hydra starts
    again = validate(composed(), session)  # the job itself, on the same config
    assert again is first and len(loads) == 1 and len(first) == 7
