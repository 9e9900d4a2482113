"""Real sweeps through main.py on a tiny model: Optuna studies that persist, resume, fail trials and survive
SIGTERM and SIGKILL, two processes on one journal study, multi-objective, define-by-run windows, the grid
sampler, optuna-dashboard, the submitit launcher. The sweeper's pure parts are in tests/test_sweeps.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, isolated_env, results_in, run_main
from specsweep.sweep import NGRAM_WINDOW_LIMIT

SMALL = ["dataset.num_prompts=2", "generation.max_new_tokens=8", "measurement.repetitions=1", "logger=none"]
PYTORCH = "backend=pytorch"


def tiny(model_dir) -> list[str]:
    return [PYTORCH, f"model.target={model_dir}", f"model.draft={model_dir}", "model.name=tiny"]


def _study(cwd, name, storage=None):
    import optuna

    storage = storage or f"sqlite:///{cwd}/outputs/optuna/{name}.db"
    if storage.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        storage = JournalStorage(JournalFileBackend(str(cwd / storage[len("journal:///") :])))
    return optuna.load_study(study_name=name, storage=storage)


def _states(study) -> list[str]:
    return [t.state.name for t in study.trials]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def dashboard_view(storage: str, cwd: Path, study_name: str) -> dict:
    """Start the real `optuna-dashboard <storage>` on a free loopback port, read the study list and the study's trials
    from its API, stop it; assert that nothing of it is left running."""
    import psutil

    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "optuna-dashboard"),
        storage,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                studies = _get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-2000:]
                time.sleep(0.3)
        (study,) = [s for s in studies if s["study_name"] == study_name]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    left = [p for p in psutil.process_iter() if _pgid(p.pid) == proc.pid]
    assert not left, f"optuna-dashboard left processes running: {left}"
    return {"study": study, "trials": detail["trials"]}


def _pgid(pid: int):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.mark.slow
def test_optuna_study_persists_in_sqlite_a_rerun_resumes_it_and_the_dashboard_reads_it(tmp_path, tiny_model_dir):
    args = ["-m", "hparams_search=ngram_k_window", "hydra.sweeper.n_trials=2", *SMALL, *tiny(tiny_model_dir)]
    first = run_main(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    study = _study(tmp_path, "ngram_k_window-tiny-pytorch")
    assert _states(study) == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # the objective is the measured tokens/s of that trial's job
        assert trial.value > 0 and (Path(trial.user_attrs["job_dir"]) / "result.json").is_file()
    assert study.user_attrs["conditions"]["generation.max_new_tokens"] == 8  # recorded when the study was made
    second = run_main(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    study = _study(tmp_path, "ngram_k_window-tiny-pytorch")
    assert _states(study) == ["COMPLETE"] * 4
    (opt,) = sorted((tmp_path / "outputs" / "sweeps").glob("*/optimization_results.yaml"))[-1:]
    assert f"best_value: {study.best_value}" in opt.read_text() and "best_params" in opt.read_text()
    seen = dashboard_view("sqlite:///outputs/optuna/ngram_k_window-tiny-pytorch.db", tmp_path, study.study_name)
    assert [t["state"] for t in seen["trials"]] == ["Complete"] * 4
    assert [t["values"][0] for t in seen["trials"]] == [t.value for t in study.trials]


@pytest.mark.slow
def test_failed_trials_are_recorded_fail_and_the_study_goes_on(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2"}')
    args = ["-m", "hparams_search=draft_model_k", PYTORCH, f"model.draft={broken}", f"model.target={tiny_model_dir}"]
    proc = run_main(*args, "model.name=tiny", "hydra.sweeper.n_trials=2", *SMALL, cwd=tmp_path)
    study = _study(tmp_path, "draft_model_k-tiny-pytorch")
    assert _states(study) == ["FAIL", "FAIL"]  # the second trial ran although the first failed
    assert all("OSError" in t.user_attrs["fail_reason"] for t in study.trials)
    assert all(r["status"] == "failed" and "Error" in r["error"] for r in results_in(tmp_path))
    # every trial failed: one clean closing line and exit 1, no traceback
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("specsweep: no trial of study 'draft_model_k-tiny-pytorch'")
    # over max_failure_rate: stop after the batch that crossed it, one line, exit 1
    strict = run_main(*args, "model.name=tiny", "hydra.sweeper.max_failure_rate=0", *SMALL, cwd=tmp_path)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert strict.stderr.strip().splitlines()[-1].startswith("specsweep: optuna sweep stopped: 1 of 1 trials failed")
    assert _states(_study(tmp_path, "draft_model_k-tiny-pytorch")) == ["FAIL"] * 3


def _start_sweep(tmp_path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=isolated_env(tmp_path),
    )


def _wait_for_a_running_job(tmp_path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(r["status"] == "running" for r in results_in(tmp_path)):
            return
        time.sleep(0.05)
    raise AssertionError("no job started")


@pytest.mark.slow
def test_a_killed_study_resumes_with_the_dangling_trial_failed_and_retried(tmp_path, tiny_model_dir):
    args = ["-m", "hparams_search=draft_model_k", "hydra.sweeper.n_trials=1", *SMALL, *tiny(tiny_model_dir)]
    proc = _start_sweep(tmp_path, *args)
    _wait_for_a_running_job(tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, mid-trial
    proc.wait()
    study = _study(tmp_path, "draft_model_k-tiny-pytorch")
    assert _states(study) == ["RUNNING"], "the kill should land while the trial runs"
    rerun = run_main(*args, cwd=tmp_path)  # at once: the dead owner is known without waiting for heartbeats
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = _study(tmp_path, "draft_model_k-tiny-pytorch")
    assert _states(study) == ["FAIL", "COMPLETE"]
    killed, retried = study.trials
    assert retried.params == killed.params and retried.system_attrs["failed_trial"] == 0  # asked again


@pytest.mark.slow
def test_sigterm_mid_trial_tells_the_trial_fail_before_exiting(tmp_path, tiny_model_dir):
    args = ["-m", "hparams_search=draft_model_k", "hydra.sweeper.n_trials=1", *SMALL, *tiny(tiny_model_dir)]
    proc = _start_sweep(tmp_path, *args)
    _wait_for_a_running_job(tmp_path)
    time.sleep(0.5)  # inside the job (its SIGTERM handler is installed once its running record is written)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    (trial,) = _study(tmp_path, "draft_model_k-tiny-pytorch").trials
    assert trial.state.name == "FAIL" and "the sweep stopped" in trial.user_attrs["fail_reason"]


@pytest.mark.slow
def test_two_processes_share_one_journal_study(tmp_path, tiny_model_dir):
    storage = "journal:///outputs/optuna/shared.log"
    args = ["-m", "hparams_search=draft_model_k", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}"]
    procs = [_start_sweep(tmp_path, *args, *SMALL, *tiny(tiny_model_dir)) for _ in range(2)]
    for proc in procs:  # at once, like two SLURM jobs running the same command on a shared file system
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
    study = _study(tmp_path, "draft_model_k-tiny-pytorch", storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert _states(study) == ["COMPLETE"] * 4  # none left RUNNING
    owners = {t.system_attrs["specsweep:owner"]["pid"] for t in study.trials}
    assert owners == {p.pid for p in procs} and all("specsweep:heartbeat" in t.system_attrs for t in study.trials)
    seen = dashboard_view(str(tmp_path / "outputs" / "optuna" / "shared.log"), tmp_path, study.study_name)
    assert sorted(t["number"] for t in seen["trials"]) == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_rerun_under_other_conditions_is_refused_in_one_line(tmp_path, tiny_model_dir):
    args = ["-m", "hparams_search=draft_model_k", "hydra.sweeper.n_trials=1", *tiny(tiny_model_dir)]
    first = run_main(*args, *SMALL, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    sweeps = set((tmp_path / "outputs" / "sweeps").iterdir())
    other = [*SMALL[1:], "dataset.num_prompts=3", "generation.temperature=0.5"]
    refused = run_main(*args, *other, cwd=tmp_path)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "dataset.num_prompts: 2 -> 3" in line and "generation.temperature: 0.0 -> 0.5" in line
    assert "hydra.sweeper.study_name" in line and "speculation.num_speculative_tokens" not in line  # swept: not a key
    assert len(_study(tmp_path, "draft_model_k-tiny-pytorch").trials) == 1  # nothing launched
    assert not [p for p in set((tmp_path / "outputs" / "sweeps").iterdir()) - sweeps if any(p.iterdir())]


@pytest.mark.slow
def test_multi_objective_writes_the_pareto_solutions(tmp_path, tiny_model_dir):
    objective = "measurement.objective=[metrics.tpot_s,metrics.ttft_s]"  # both measurable without energy counters
    args = ["-m", "hparams_search=latency_energy", objective, "hydra.sweeper.n_trials=3", *SMALL]
    proc = run_main(*args, *tiny(tiny_model_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _study(tmp_path, "latency_energy-tiny-pytorch-draft_model")
    assert study.directions[0].name == "MINIMIZE" and len(study.directions) == 2
    from omegaconf import OmegaConf

    (opt,) = (tmp_path / "outputs" / "sweeps").glob("*/optimization_results.yaml")
    solutions = OmegaConf.to_container(OmegaConf.load(opt))["solutions"]
    assert sorted(s["number"] for s in solutions) == sorted(t.number for t in study.best_trials)
    for solution in solutions:
        trial = study.trials[solution["number"]]
        assert solution["values"] == trial.values and solution["params"] == trial.params


@pytest.mark.slow
def test_define_by_run_ngram_window_samples_valid_windows_in_a_real_sweep(tmp_path, tiny_model_dir):
    # seed 2: the first window has ngram_min 1 (runs on pytorch), the second does not (refused by validation: FAIL)
    args = ["-m", "hparams_search=ngram_window", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=2", *SMALL]
    proc = run_main(*args, *tiny(tiny_model_dir), cwd=tmp_path)
    study = _study(tmp_path, "ngram_window-tiny-pytorch")
    for trial in study.trials:
        low, high = trial.params["speculation.ngram_min"], trial.params["speculation.ngram_max"]
        assert 1 <= low <= high <= NGRAM_WINDOW_LIMIT
        assert trial.state.name == ("COMPLETE" if low == 1 else "FAIL"), trial
    assert {t.state.name for t in study.trials} == {"COMPLETE", "FAIL"}
    (failed,) = [t for t in study.trials if t.state.name == "FAIL"]
    assert "speculation.ngram_min" in failed.user_attrs["fail_reason"]
    assert proc.returncode == 1  # the sweep summary reports the failed job


@pytest.mark.slow
def test_the_grid_sampler_runs_each_point_once_and_a_rerun_adds_none(tmp_path, tiny_model_dir):
    grid = ["hydra/sweeper/sampler=grid", "speculation.num_speculative_tokens=choice(1, 2)"]
    args = ["-m", "hparams_search=draft_model_k", *grid, "hydra.sweeper.n_trials=5", *SMALL, *tiny(tiny_model_dir)]
    first = run_main(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    study = _study(tmp_path, "draft_model_k-tiny-pytorch")
    assert sorted(t.params["speculation.num_speculative_tokens"] for t in study.trials) == [1, 2]  # not 5 trials
    again = run_main(*args, cwd=tmp_path)
    assert "every point of the grid has a finished trial" in again.stdout + again.stderr
    assert again.returncode == 1 and "recorded a result" in again.stderr  # the sweep summary: a sweep that ran nothing
    assert len(_study(tmp_path, "draft_model_k-tiny-pytorch").trials) == 2


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
