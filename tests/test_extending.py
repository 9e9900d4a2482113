"""docs/extending.md, kept honest: a backend defined in the test suite (tests/plugins/toy_backend.py) registers itself
through an entry point and runs end to end through `python main.py`, with no file of specsweep touched."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, results_in, run_main

PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture
def toy_run(tmp_path):
    model = tmp_path / "toy-model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a local model directory, as validation asks of any target
    args = ["backend=toy", "model.name=toy", f"model.target={model}", "model.draft=null", "logger=none", "energy=none"]

    def run(*extra: str, plugin: bool = True):
        env = {"PYTHONPATH": str(PLUGINS)} if plugin else {"PYTHONPATH": ""}
        return run_main(*args, *extra, cwd=tmp_path, env=env, timeout=300)

    return run, tmp_path


def test_a_plugin_backend_runs_end_to_end_through_main(toy_run):
    run, cwd = toy_run
    proc = run("speculation=ngram", "speculation.num_speculative_tokens=3", "generation.max_new_tokens=40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(cwd)
    assert (result["status"], result["backend"], result["method"], result["k"]) == ("ok", "toy", "ngram", 3)
    assert result["native_config"] == {
        "vocab": 64,
        "token_delay_s": 0.0,
        "max_new_tokens": 40,
        "lookup": {"k": 3, "n": 3},
    }
    m = result["metrics"]
    assert 0 < m["accepted_tokens"] < m["drafted_tokens"]  # the toy model accepts some prompt-lookup drafts, not all
    assert m["acceptance_rate"] == pytest.approx(m["accepted_tokens"] / m["drafted_tokens"])
    assert m["speedup"] == pytest.approx(m["tokens_per_s"] / m["baseline_tokens_per_s"])
    assert result["lossless"]["checked"] and result["lossless"]["match_rate"] == 1.0  # verification keeps outputs exact
    assert result["environment"] == {"engine": "toy", "vocab": 64}
    # the plugin's own distribution (its declaration names it) enters the reuse key: an upgrade measures again
    assert result["validity"]["parts"]["stack"]["toy-backend"] == "0.1"
    row = json.loads((cwd / "outputs" / "runs" / "results.jsonl").read_text().splitlines()[0])
    assert row["backend"] == "toy" and row["config_hash"] == result["config_hash"]


def test_a_plugin_backend_gets_the_cost_curve_from_its_forward_timers(toy_run):
    run, cwd = toy_run
    proc = run("speculation=ngram", "speculation.num_speculative_tokens=4", "measurement.cost_model=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = results_in(cwd)
    curve = result["theory"]["curve"]
    assert curve is not None, result["theory"]["curve_note"]
    assert [p["k"] for p in curve["points"]] == [1, 2, 3, 4] and len(curve["verify_s"]) == 5
    assert curve["verify_s"] == sorted(curve["verify_s"]) and curve["draft_token_s"] == 0.0  # prompt lookup: free
    assert result["theory"]["cost_ratio"] == 0.0


def test_a_plugin_backend_is_validated_listed_and_dry_run_like_a_builtin(toy_run):
    run, cwd = toy_run
    bad = run("backend.vocab=4")  # a bound the plugin declared on its own field
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "specsweep: config error: backend.vocab=4 is invalid: expected an integer in [8, 256]"
    )
    unsupported = run("speculation=draft_model")
    assert unsupported.returncode == 2
    assert "a method backend=toy supports: none, ngram" in unsupported.stderr
    dry = run("speculation=ngram", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["native_config"]["lookup"] == {"k": 4, "n": 3}
    matrix = run_main("--support-matrix", cwd=cwd, env={"PYTHONPATH": str(PLUGINS)}, timeout=120)
    assert "toy" in matrix.stdout
    helped = run_main("--help", cwd=cwd, env={"PYTHONPATH": str(PLUGINS)}, timeout=120)
    assert (
        "backend: llamacpp, llamacpp_server, mlx, mlx_server, pytorch, tensorrt, toy, vllm, vllm_server"
        in helped.stdout
    )
    assert not (cwd / "outputs").exists()  # nothing above ran or wrote anything


def test_without_the_plugin_installed_the_backend_is_unknown(toy_run):
    run, _ = toy_run
    proc = run(plugin=False)
    assert proc.returncode == 2
    assert (
        "backend='toy' is invalid: expected one of llamacpp, llamacpp_server, mlx, mlx_server, pytorch, tensorrt, "
        "vllm, vllm_server" in proc.stderr
    )
