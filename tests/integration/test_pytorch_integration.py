"""Real runs of main.py on real weights: the packaged Qwen2.5-Coder pair and a tiny model the tests build."""

from __future__ import annotations

import json

import pytest

from conftest import results_in, run_main

pytestmark = pytest.mark.slow

SMALL = [
    "backend=pytorch",
    "dataset.num_prompts=2",
    "generation.max_new_tokens=12",
    "measurement.repetitions=1",
    "measurement.warmup=1",
]


def tiny(model_dir) -> list[str]:
    return [f"model.target={model_dir}", f"model.draft={model_dir}", "model.name=tiny"]


def test_draft_model_on_the_embedded_default_pair_writes_real_numbers(tmp_path):
    proc = run_main("speculation=draft_model", *SMALL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(tmp_path)
    assert result["status"] == "ok" and result["error"] is None
    assert (result["backend"], result["method"], result["k"], result["model"]) == (
        "pytorch",
        "draft_model",
        5,
        "qwen2.5-coder-1.5b",
    )
    m = result["metrics"]
    for key in (
        "tokens_per_s",
        "baseline_tokens_per_s",
        "speedup",
        "acceptance_rate",
        "mean_acceptance_length",
        "ttft_s",
        "tpot_s",
        "peak_memory_mb",
    ):
        assert isinstance(m[key], float) and m[key] > 0, key
    assert 0 < m["acceptance_rate"] <= 1
    assert 1 <= m["mean_acceptance_length"] <= 6
    assert m["speedup"] == pytest.approx(m["tokens_per_s"] / m["baseline_tokens_per_s"])
    per_pos = m["acceptance_per_position"]
    assert len(per_pos) == 5 and all(a >= b for a, b in zip(per_pos, per_pos[1:]))
    assert m["accepted_tokens"] <= m["drafted_tokens"]
    lossless, rows = result["lossless"], [r for r in result["per_prompt"] if r["compared_to_baseline"]]
    differ = sorted(r["id"] for r in rows if r["first_mismatch"] is not None)  # bf16 may differ; the count must agree
    assert lossless["checked"] is True and lossless["prompts"] == len(rows) == 2
    assert sorted(x["id"] for x in lossless["mismatches"]) == differ
    assert lossless["match_rate"] == pytest.approx((len(rows) - len(differ)) / len(rows))
    assert "bfloat16" in result["lossless"]["note"]
    assert {r["category"] for r in result["per_prompt"]} and all(r["speedup"] > 0 for r in result["per_prompt"])
    assert result["environment"]["transformers"] and result["environment"]["torch_threads"] >= 1
    assert result["energy"]["joules"] is None and result["energy"]["unavailable_reason"]
    assert result["stats"]["tokens_per_s"]["n"] == 2
    table = [json.loads(line) for line in (tmp_path / "outputs" / "runs" / "results.jsonl").read_text().splitlines()]
    assert table[0]["config_hash"] == result["config_hash"] and table[0]["metrics"]["speedup"] == m["speedup"]


def test_model_as_its_own_draft_accepts_everything_and_fp32_is_lossless(tmp_path):
    proc = run_main(
        "model=qwen2.5-coder-0.5b",
        "speculation=draft_model",
        "speculation.num_speculative_tokens=3",
        "backend.dtype=float32",
        "backend.num_threads=1",
        *SMALL,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(tmp_path)
    m = result["metrics"]
    assert m["acceptance_rate"] == 1.0
    assert m["acceptance_per_position"] == [1.0, 1.0, 1.0]
    assert result["lossless"]["match_rate"] == 1.0 and result["lossless"]["note"] is None  # fp32: no excuse to differ


def test_ngram_prompt_lookup_counts_and_fp32_outputs_match_the_baseline(tmp_path, tiny_model_dir):
    proc = run_main(
        "backend=pytorch",
        "speculation=ngram",
        "speculation.num_speculative_tokens=3",
        "speculation.ngram_max=2",
        "backend.dtype=float32",
        "backend.num_threads=1",
        "dataset.categories=[editing]",
        "dataset.num_prompts=2",
        "generation.max_new_tokens=24",
        "measurement.repetitions=2",
        *tiny(tiny_model_dir),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(tmp_path)
    m = result["metrics"]
    assert result["native_config"]["generate_kwargs"]["prompt_lookup_num_tokens"] == 3
    assert m["num_drafts"] > 0 and 0 <= m["accepted_tokens"] <= m["drafted_tokens"]
    assert len(m["acceptance_per_position"]) <= 3
    assert result["lossless"]["match_rate"] == 1.0
    assert result["stats"]["tokens_per_s"]["n"] == 4


def test_sampling_reports_lossless_as_not_applicable(tmp_path, tiny_model_dir):
    proc = run_main("generation.temperature=0.8", *SMALL, *tiny(tiny_model_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(tmp_path)
    assert result["lossless"]["checked"] is False and "sampling" in result["lossless"]["reason"]


def test_a_crashing_job_is_recorded_failed_and_the_sweep_goes_on(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2"}')  # no weights: loading raises
    proc = run_main(
        "-m",
        f"model.draft={tiny_model_dir},{broken}",
        f"model.target={tiny_model_dir}",
        "model.name=tiny",
        *SMALL,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    by_draft = {r["config"]["model"]["draft"]: r for r in results_in(tmp_path)}
    assert by_draft[str(tiny_model_dir)]["status"] == "ok"
    failed = by_draft[str(broken)]
    assert failed["status"] == "failed" and failed["error"] and "\n" not in failed["error"]
    (table,) = (tmp_path / "outputs" / "sweeps").glob("*/results.jsonl")
    assert sorted(json.loads(line)["status"] for line in table.read_text().splitlines()) == ["failed", "ok"]


def test_interleaved_jobs_measure_their_own_baseline_on_the_shared_target_weights(tmp_path, tiny_model_dir):
    proc = run_main("-m", "speculation.num_speculative_tokens=2,3", *SMALL, *tiny(tiny_model_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_in(tmp_path)
    assert len(results) == 2
    for result in results:  # the default pairing on pytorch: each job interleaves its own baseline
        assert result["baseline"]["pairing"] == "interleaved" and result["baseline"]["measured_in_job"]
        assert result["baseline"]["source"] == "measured in this job, interleaved with the speculative generations"
        assert result["metrics"]["baseline_tokens_per_s"] > 0 and result["lossless"]["match_rate"] == 1.0
    # baseline and speculative engines of both jobs used one load of the weights (target and draft are one dir here)
    assert list(results[-1]["environment"]["model_loads"].values()) == [1]


def test_phased_sweep_reuses_baseline_and_models_and_a_rerun_skips_finished_jobs(tmp_path, tiny_model_dir):
    args = ["-m", "speculation.num_speculative_tokens=2,3", "measurement.pairing=phased", *SMALL, *tiny(tiny_model_dir)]
    proc = run_main(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = results_in(tmp_path)
    assert [r["baseline"]["source"] for r in first] == [
        "measured in this job",
        "reused: measured earlier in this process with the same key",
    ]
    assert first[0]["metrics"]["baseline_tokens_per_s"] == first[1]["metrics"]["baseline_tokens_per_s"]
    rerun = run_main(*args, cwd=tmp_path)
    assert rerun.returncode == 0
    assert (rerun.stdout + rerun.stderr).count("reusing the ok result of this config") == 2
    reruns = [r for r in results_in(tmp_path) if r["reused_from"]]
    assert len(reruns) == 2 and all(r["metrics"] == first[i]["metrics"] for i, r in enumerate(reruns))
    measured = [r for r in results_in(tmp_path) if not r["reused_from"]]
    assert len(measured) == 2  # nothing new was measured: the rerun's sweep records the reused results
    forced = run_main(*args, "force=true", cwd=tmp_path)
    assert forced.returncode == 0 and len([r for r in results_in(tmp_path) if not r["reused_from"]]) == 4


def test_a_no_speculation_job_is_the_baseline_of_the_next_jobs(tmp_path, tiny_model_dir):
    proc = run_main(
        "-m", "speculation=none,ngram", "measurement.pairing=phased", *SMALL, *tiny(tiny_model_dir), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_method = {r["method"]: r for r in results_in(tmp_path)}
    assert by_method["ngram"]["baseline"]["source"].startswith("reused")
    assert by_method["ngram"]["metrics"]["baseline_tokens_per_s"] == by_method["none"]["metrics"]["tokens_per_s"]
    assert by_method["none"]["metrics"]["speedup"] is None


def test_an_invalid_job_in_a_sweep_is_recorded_with_the_validation_message(tmp_path, tiny_model_dir):
    args = ["-m", "speculation.num_speculative_tokens=0,2", *SMALL, *tiny(tiny_model_dir)]
    refused = run_main(*args, cwd=tmp_path)  # a grid's invalid job stops the whole sweep before anything runs
    assert refused.returncode == 2 and "speculation.num_speculative_tokens=0 is invalid" in refused.stderr
    assert not (tmp_path / "outputs").exists()
    proc = run_main(*args, "--run-valid", cwd=tmp_path)  # ... unless asked to run the valid ones
    assert proc.returncode != 0
    by_k = {r["k"]: r for r in results_in(tmp_path)}
    assert by_k[2]["status"] == "ok"
    assert by_k[0]["status"] == "failed"
    assert (
        by_k[0]["error"]
        == "ConfigError: speculation.num_speculative_tokens=0 is invalid: expected an integer in [1, 64]"
    )


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_a_set_acceptance_is_what_the_draft_gets_and_the_counts_show_it(tmp_path, tiny_model_dir, alpha):
    """speculation.synthetic_acceptance on transformers: each drafted token is accepted with probability alpha at
    verification (the real draft and target forwards still run), so the per-position acceptance is alpha^i within
    binomial error, 0 and 1 exactly at the ends; the lossless check is skipped with the reason."""
    proc = run_main(
        "backend=pytorch",
        "speculation=draft_model",
        "speculation.num_speculative_tokens=3",
        f"speculation.synthetic_acceptance={alpha}",
        "backend.dtype=float32",
        "backend.num_threads=1",
        "dataset.num_prompts=4",
        "generation.max_new_tokens=96",
        "measurement.repetitions=1",
        "measurement.warmup=0",
        *tiny(tiny_model_dir),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(tmp_path)
    m = result["metrics"]
    steps = m["num_drafts"]
    assert result["synthetic_acceptance"] == alpha and result["native_config"]["synthetic_acceptance"]["alpha"] == alpha
    assert not result["lossless"]["checked"] and "not the target's" in result["lossless"]["reason"]
    for i, rate in enumerate(m["acceptance_per_position"], start=1):
        expected = alpha**i
        # 4 sigma of a binomial share over the steps, and one step: the last may draft fewer at the length limit
        tolerance = 4 * (expected * (1 - expected) / steps) ** 0.5 + 1 / steps
        assert abs(rate - expected) <= tolerance, (i, rate, expected, steps)


def test_with_the_acceptance_known_the_cost_curve_predicts_the_measured_speedup(tmp_path):
    """The cost model's honest test (it replaced one whose engine was the formula it checked): real forwards of the
    packaged 1.5B target and 0.5B draft, acceptance set to 0.3 per token so the probe's acceptance is what the other
    job gets too. The k=4 probe's curve, built from its timed forwards and counts, predicts the k=1 job's measured
    speedup within 15%. The issue's 10% target is a benchmark figure (docs/results.md: +4.6% in the acceptance map,
    -10.3% in a CI run of this test, so two measurements here differ by more than 10 points); this bound is what
    says the model is broken: with the draft's cost left out it was off by 41%."""
    proc = run_main(
        "-m",
        "backend=pytorch",
        "speculation=draft_model",
        "speculation.num_speculative_tokens=1,4",
        "speculation.synthetic_acceptance=0.3",
        "measurement.cost_model=true",
        "dataset.num_prompts=4",
        "generation.max_new_tokens=32",
        "measurement.repetitions=2",
        "energy=none",
        "logger=none",
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["k"]: r for r in results_in(tmp_path)}
    curve = results[4]["theory"]["curve"]
    predicted = {p["k"]: p["speedup"] for p in curve["points"]}
    measured = results[1]["metrics"]["speedup"]
    assert curve["draft_token_s"] > 0 and results[4]["theory"]["cost_ratio"] > 0  # the draft's cost is real
    assert abs(predicted[1] / measured - 1) <= 0.15, (predicted, measured)
