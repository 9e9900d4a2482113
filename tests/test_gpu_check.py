"""scripts/gpu_check.sh, the first GPU check: its CPU dry run end to end (so the GPU path cannot rot), and the
self-draft acceptance check that decides its exit code."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from specsweep.results.schema import SCHEMA_PATH, validation_errors

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def load_helper():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load_helper()


def self_draft_result(**metrics) -> dict:
    """A float32 draft_model result whose target drafts for itself: 2 generations of 12 tokens at k=5, all accepted."""
    result = {
        "status": "ok",
        "error": None,
        "method": "draft_model",
        "k": 5,
        "config": {
            "backend": {"dtype": "float32"},
            "generation": {"max_new_tokens": 12},
            "model": {"target": "/m", "draft": "/m"},
        },
        "metrics": {
            "drafted_tokens": 20,
            "accepted_tokens": 20,
            "num_drafts": 4,
            "acceptance_rate": 1.0,
            "mean_acceptance_length": 6.0,
        },
        "per_prompt": [{"id": "a", "output_tokens": 12}, {"id": "b", "output_tokens": 12}],
    }
    result["metrics"].update(metrics)
    return result


def test_expected_acceptance_length_counts_the_shorter_last_step():
    assert gpu_check.expected_acceptance_length(60, 5) == 6
    assert gpu_check.expected_acceptance_length(64, 5) == 64 / 11  # 10 full steps, then one of 3 drafts + bonus


def test_self_draft_check_passes_exact_counts_and_fails_any_rejection():
    assert gpu_check.self_draft_check(self_draft_result()).startswith("PASS")
    one_rejected = self_draft_result(accepted_tokens=19, acceptance_rate=0.95, mean_acceptance_length=5.75)
    verdict = gpu_check.self_draft_check(one_rejected)
    assert verdict.startswith("FAIL") and "accepted 19 of 20" in verdict and "5.75 != 6" in verdict
    # counts that agree with each other but not with k: drafts of 4 where k is 5
    short_drafts = self_draft_result(drafted_tokens=16, accepted_tokens=16, num_drafts=4, mean_acceptance_length=5.0)
    assert "mean acceptance length 5.0 != 6" in gpu_check.self_draft_check(short_drafts)
    cut = self_draft_result()
    cut["per_prompt"][1]["output_tokens"] = 7
    assert "shorter than 12 tokens: ['b']" in gpu_check.self_draft_check(cut)


def test_summary_exit_code_follows_the_float32_self_draft_check_only(tmp_path):
    runs = tmp_path / "runs"
    bf16 = self_draft_result(accepted_tokens=15, acceptance_rate=0.75, mean_acceptance_length=4.75)
    bf16["config"]["backend"]["dtype"] = "bfloat16"
    for i, result in enumerate([self_draft_result(), bf16]):
        (runs / str(i)).mkdir(parents=True)
        (runs / str(i) / "result.json").write_text(json.dumps(result))
    assert gpu_check.summarize(tmp_path, runs) == 0
    summary = (tmp_path / "summary.txt").read_text()
    assert "self-draft acceptance check: PASS" in summary
    assert "self-draft in bfloat16 (not checked: not bit-exact): not all accepted" in summary
    assert summary.rstrip().endswith("ALL PASS")
    assert {p.name for p in tmp_path.glob("result-*.json")} == {
        "result-draft_model-k5-float32.json",
        "result-draft_model-k5-bfloat16.json",
    }

    broken = copy.deepcopy(self_draft_result(accepted_tokens=19, acceptance_rate=0.95))
    (runs / "0" / "result.json").write_text(json.dumps(broken))
    assert gpu_check.summarize(tmp_path, runs) == 1
    assert (tmp_path / "summary.txt").read_text().rstrip().endswith("SOME CHECK FAILED")


def test_no_float32_self_draft_result_is_a_failure(tmp_path):
    (tmp_path / "runs").mkdir()
    assert gpu_check.summarize(tmp_path, tmp_path / "runs") == 1
    assert "no float32 self-draft job" in (tmp_path / "summary.txt").read_text()


def test_bad_arguments_are_refused():
    for args in (["--bogus"], []):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr


@pytest.mark.slow
def test_dry_run_writes_the_summary_and_results_and_the_self_draft_check_passes(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--pack", str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    summary = (out / "summary.txt").read_text()
    assert "self-draft acceptance check: PASS" in summary and summary.rstrip().endswith("ALL PASS")
    labels = {"draft_model-k5-float32", "draft_model-k5-bfloat16", "ngram-k4-float32", "ngram-k4-bfloat16"}
    assert {p.name for p in out.glob("result-*.json")} == {f"result-{label}.json" for label in labels}
    results = {label: json.loads((out / f"result-{label}.json").read_text()) for label in labels}
    assert all(r["status"] == "ok" and r["environment"]["device"] == "cpu" for r in results.values())
    schema = json.loads((REPO / SCHEMA_PATH).read_text())
    assert {label: validation_errors(r, schema) for label, r in results.items()} == {label: [] for label in labels}
    m = results["draft_model-k5-float32"]["metrics"]
    # The model drafting for itself, greedy: every drafted token accepted, k+1 tokens per step.
    assert m["acceptance_rate"] == 1.0 and m["accepted_tokens"] == m["drafted_tokens"] > 0
    assert m["mean_acceptance_length"] == 6.0
    assert "# package versions" in (out / "environment.txt").read_text()
    # --pack leaves what the device tool brings back: at most 8 plain files with plain names, no folders.
    assert (out / "runs.tar.gz").is_file() and not (out / "runs").exists()
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
