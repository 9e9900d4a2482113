"""llama.cpp (xllamacpp, in-process server) on real weights: the packaged Qwen2.5-Coder 0.5B as its own GGUF, as
target and as draft (seconds per job on a CPU)."""

from __future__ import annotations

import pytest

from conftest import results_in, run_main

pytestmark = pytest.mark.slow

SMALL = [
    "backend=llamacpp",
    "model=qwen2.5-coder-0.5b",
    "dataset.num_prompts=2",
    "generation.max_new_tokens=24",
    "measurement.repetitions=1",
    "measurement.warmup=1",
    "energy=none",
    "logger=none",
]


def test_none_ngram_and_draft_model_in_one_sweep_count_exactly(tmp_path):
    proc = run_main("-m", *SMALL, "speculation=none,ngram,draft_model", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["method"]: r for r in results_in(tmp_path)}
    assert set(results) == {"none", "ngram", "draft_model"}
    assert all(r["status"] == "ok" for r in results.values())
    none = results["none"]["metrics"]
    assert none["tokens_per_s"] > 0 and none["drafted_tokens"] is None and none["ttft_s"] > 0
    for method in ("ngram", "draft_model"):
        result = results[method]
        m = result["metrics"]
        assert m["drafted_tokens"] >= m["accepted_tokens"] >= 0, method
        assert m["speedup"] > 0 and m["ttft_s"] > 0 and m["tpot_s"] > 0
        # The server's per-request counters were checked against the responses' timings while measuring (a mismatch
        # fails the job); every step counted drafted at most k tokens.
        assert len(m["acceptance_per_position"]) <= result["k"]
        assert result["lossless"]["checked"] is True and "not bit-exact" in result["lossless"]["note"]
        # passive OpenMP threads (the default, as libgomp reports it): the baseline interleaves on a server of its own
        assert result["baseline"]["pairing"] == "interleaved" and result["baseline"]["measured_in_job"]
        env = result["environment"]
        assert env["openmp"] == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}
        assert env["xllamacpp"] == "2026.10.11549" and "AVX2" in env["cpu_features_used"]
        assert env["model_ftype"].startswith("Q4_K")
        assert all(p["output_tokens"] > 0 for p in result["per_prompt"])
    draft = results["draft_model"]["metrics"]
    assert draft["drafted_tokens"] > 0 and draft["num_drafts"] > 0
    # The 0.5B drafting for itself: nearly every token is accepted (not all: see the k=1 test).
    assert draft["acceptance_rate"] >= 0.8
    assert results["draft_model"]["theory"]["cost_ratio"] > 0  # t_draft / t_verify(1), timed on the job's server


def test_the_model_as_its_own_draft_at_k1_accepts_every_token_and_matches_the_baseline(tmp_path):
    """At k=1 llama.cpp's verification batch (2 tokens) computes what one-token decoding does, so a model drafting
    for itself must have every draft accepted and the baseline's exact output: a real check of the counts."""
    proc = run_main(
        *SMALL,
        "speculation=draft_model",
        "speculation.num_speculative_tokens=1",
        "measurement.cost_model=true",
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(tmp_path)
    m = result["metrics"]
    assert m["acceptance_rate"] == 1.0 and m["acceptance_per_position"] == [1.0]
    assert m["num_drafts"] == m["drafted_tokens"] > 0
    assert result["lossless"]["match_rate"] == 1.0
    curve = result["theory"]["curve"]
    assert curve is not None and len(curve["verify_s"]) == 2 and curve["draft_token_s"] > 0
