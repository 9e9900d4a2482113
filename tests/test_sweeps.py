"""Sweeps: Optuna studies that resume, define-by-run windows, SIGKILL mid-sweep, the submitit launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, isolated_env, results_in, run_main
from specsweep.sweep import NGRAM_WINDOW_LIMIT, ngram_window

SMALL = ["dataset.num_prompts=2", "generation.max_new_tokens=8", "measurement.repetitions=1", "logger=none"]


def tiny(model_dir) -> list[str]:
    return [f"model.target={model_dir}", f"model.draft={model_dir}", "model.name=tiny"]


def test_ngram_window_space_only_samples_valid_windows():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    windows = set()
    for _ in range(60):
        trial = study.ask()
        ngram_window(None, trial)
        low, high = trial.params["speculation.ngram_min"], trial.params["speculation.ngram_max"]
        assert 1 <= low <= high <= NGRAM_WINDOW_LIMIT
        windows.add((low, high))
        study.tell(trial, 0.0)
    assert len(windows) > 5  # the space is explored, not collapsed to one window


def _study(cwd, name):
    import optuna

    storage = f"sqlite:///{cwd}/outputs/optuna/{name}.db"
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_optuna_study_persists_in_sqlite_and_a_rerun_resumes_it(tmp_path, tiny_model_dir):
    args = ["-m", "hparams_search=ngram_k_window", "hydra.sweeper.n_trials=2", *SMALL, *tiny(tiny_model_dir)]
    first = run_main(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    study = _study(tmp_path, "ngram_k_window-tiny-pytorch")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # the objective is the measured tokens/s of that trial's job
        assert trial.value > 0
    second = run_main(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    study = _study(tmp_path, "ngram_k_window-tiny-pytorch")
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    (opt,) = sorted((tmp_path / "outputs" / "sweeps").glob("*/optimization_results.yaml"))[-1:]
    assert "best_params" in opt.read_text()


@pytest.mark.slow
def test_failed_trials_are_recorded_fail_and_the_study_goes_on(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2"}')
    proc = run_main(
        "-m",
        "hparams_search=draft_model_k",
        "hydra.sweeper.n_trials=2",
        f"model.draft={broken}",
        f"model.target={tiny_model_dir}",
        "model.name=tiny",
        *SMALL,
        cwd=tmp_path,
    )
    study = _study(tmp_path, "draft_model_k-tiny-pytorch")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all(r["status"] == "failed" and "Error" in r["error"] for r in results_in(tmp_path))
    assert proc.returncode != 0  # the process reports that something failed


@pytest.mark.slow
def test_sigkill_mid_sweep_keeps_finished_results_and_the_rerun_skips_them(tmp_path, tiny_model_dir):
    args = ["-m", "speculation.num_speculative_tokens=1,2,3", *SMALL, *tiny(tiny_model_dir)]
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=isolated_env(tmp_path),
    )
    deadline = time.time() + 600
    while time.time() < deadline and not any(r["status"] == "ok" for r in results_in(tmp_path)):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [r for r in results_in(tmp_path) if r["status"] == "ok"]
    assert 1 <= len(done) < 3, "the kill should land mid-sweep"
    for path in (tmp_path / "outputs").rglob("*.jsonl"):
        for line in path.read_text().splitlines()[:-1]:
            json.loads(line)  # every complete row parses; only a torn last line may not
    rerun = run_main(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    output = rerun.stdout + rerun.stderr
    assert output.count("reusing the ok result of this config") == len(done)
    ok = {r["k"] for r in results_in(tmp_path) if r["status"] == "ok"}
    assert ok == {1, 2, 3}
    measured = [r for r in results_in(tmp_path) if r["status"] == "ok" and r["reused_from"] is None]
    assert len(measured) == 3  # nothing measured twice
    reused = [r for r in results_in(tmp_path) if r["reused_from"]]  # ... and the rerun's sweep lists the reused jobs
    assert len(reused) == len(done) and {r["config_hash"] for r in reused} == {r["config_hash"] for r in done}


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path, tiny_model_dir):
    proc = run_main(
        "-m", "hydra/launcher=local", "speculation=ngram,draft_model", *SMALL, *tiny(tiny_model_dir), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_in(tmp_path)
    assert sorted(r["method"] for r in results) == ["draft_model", "ngram"]
    assert all(r["status"] == "ok" for r in results)
    assert list((tmp_path / "outputs" / "sweeps").glob("*/.submitit/*"))
