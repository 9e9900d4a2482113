"""Sweeps: the Optuna sweeper (search-space parsing, storages, dead trials, study conditions, resume, SLURM-style
concurrent processes, optuna-dashboard), define-by-run windows, SIGKILL mid-sweep, the submitit launcher."""

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
from specsweep.sweep import NGRAM_WINDOW_LIMIT, ngram_window

SMALL = ["dataset.num_prompts=2", "generation.max_new_tokens=8", "measurement.repetitions=1", "logger=none"]


def tiny(model_dir) -> list[str]:
    return [f"model.target={model_dir}", f"model.draft={model_dir}", "model.name=tiny"]


# --- params in Hydra's sweep syntax -> Optuna distributions (Hydra's own parser) ----------------------------------


def _dist(text: str):
    from hydra_plugins.specsweep_optuna_sweeper._params import parse_params

    (dist,) = parse_params([f"x={text}"]).distributions.values()
    return dist


def _expected(kind: str, *args, **kwargs):
    import optuna.distributions as d

    return getattr(d, kind)(*args, **kwargs)


@pytest.mark.parametrize(
    "text, kind, args, kwargs",
    [
        ("choice(a, b, c)", "CategoricalDistribution", (["a", "b", "c"],), {}),
        ("1,2,3", "CategoricalDistribution", ([1, 2, 3],), {}),
        ("choice(true, 0.5, 'a b')", "CategoricalDistribution", ([True, 0.5, "a b"],), {}),
        ("range(1, 5)", "IntDistribution", (1, 4), {}),  # Hydra's range: stop excluded
        ("range(1, 10, 3)", "IntDistribution", (1, 7), {"step": 3}),
        ("range(5)", "IntDistribution", (0, 4), {}),
        ("shuffle(range(1, 4))", "IntDistribution", (1, 3), {}),
        ("range(0.1, 0.5, 0.1)", "FloatDistribution", (0.1, 0.4), {"step": 0.1}),
        ("interval(1, 10)", "FloatDistribution", (1.0, 10.0), {}),  # Hydra's interval is float ...
        ("int(interval(1, 10))", "IntDistribution", (1, 10), {}),  # ... unless cast
        ("tag(log, interval(0.001, 1))", "FloatDistribution", (0.001, 1.0), {"log": True}),
        ("tag(log, int(interval(1, 64)))", "IntDistribution", (1, 64), {"log": True}),
    ],
)
def test_every_sweep_syntax_becomes_the_right_distribution(text, kind, args, kwargs):
    assert _dist(text) == _expected(kind, *args, **kwargs)


def test_plain_values_are_fixed_overrides_and_later_overrides_win():
    from hydra_plugins.specsweep_optuna_sweeper._params import parse_params

    space = parse_params(["a=int(interval(1, 4))", "b=5", "+c=x y", "a=3", "b=choice(1, 2)"])
    assert space.fixed == {"a": "a=3", "+c": "+c=x y"}  # the command line pins a param the preset swept
    assert list(space.distributions) == ["b"]


@pytest.mark.parametrize(
    "text, says",
    [("glob(*)", "cannot sample"), ("tag(log, choice(1, 2))", "interval() only"), ("range(3, 3)", "empty")],
)
def test_unsampleable_params_fail_with_one_line(text, says):
    from hydra_plugins.specsweep_optuna_sweeper._params import SweepConfigError, parse_params

    with pytest.raises(SweepConfigError, match=says.replace("(", r"\(").replace(")", r"\)")) as err:
        parse_params([f"x={text}"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "value",
    [
        3,
        -2,
        0.1,
        1e-05,
        True,
        False,
        "ngram",
        "a b",
        "it's",
        "x,y",
        "p/q.r",
        "-1",
        "3",
        "true",
        "null",
        "a\\b",
        "a\\'b",
        "end\\",
    ],
)
def test_sampled_values_round_trip_through_hydras_parser(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.specsweep_optuna_sweeper._params import override_value

    parsed = OverridesParser.create().parse_override(f"key={override_value(value)}")
    assert not parsed.is_sweep_override() and parsed.value() == value


def test_grid_lists_every_point_of_discrete_params():
    from hydra_plugins.specsweep_optuna_sweeper._params import SweepConfigError, grid_of, parse_params

    space = parse_params(["k=range(1, 4)", "m=choice(a, b)", "t=range(0.1, 0.5, 0.1)"])
    assert grid_of(space.distributions) == {"k": [1, 2, 3], "m": ["a", "b"], "t": [0.1, 0.2, 0.3, 0.4]}
    with pytest.raises(SweepConfigError, match="discrete"):
        grid_of(parse_params(["x=interval(0, 1)"]).distributions)


def test_a_job_result_becomes_values_or_a_fail_reason():
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.specsweep_optuna_sweeper._impl import objective_values

    def ret(value, status=JobStatus.COMPLETED):
        job = JobReturn()
        job.status, job.return_value = status, value
        return job

    assert objective_values(ret(2.5), 1) == ([2.5], "")
    assert objective_values(ret((1.0, 2.0)), 2) == ([1.0, 2.0], "")
    assert "NaN" in objective_values(ret(float("nan")), 1)[1]
    assert "NaN" in objective_values(ret((1.0, float("nan"))), 2)[1]
    assert "2 directions" in objective_values(ret(1.0), 2)[1]
    assert objective_values(ret(RuntimeError("boom\ntrace"), JobStatus.FAILED), 1) == (None, "RuntimeError: boom")


def test_conditions_name_each_difference():
    from hydra_plugins.specsweep_optuna_sweeper.conditions import differences, flatten, is_swept

    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    assert is_swept("speculation.ngram_max", ["speculation"]) and not is_swept("speculation_x", ["speculation"])
    assert differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": "x"}) == ["b: 2 -> 3", 'c: unset -> "x"']


def test_hydra_finds_the_sweeper_without_importing_optuna(tmp_path):
    code = (
        "import sys\n"
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "from hydra.core.config_store import ConfigStore\n"
        "names = [p.__module__ + '.' + p.__name__ for p in Plugins.instance().discover(Sweeper)]\n"
        "import specsweep.sweep, specsweep.app\n"
        "options = sorted(ConfigStore.instance().list('hydra/sweeper/sampler'))\n"
        "print(names, options, 'optuna' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "hydra_plugins.specsweep_optuna_sweeper.optuna_sweeper.OptunaSweeper" in proc.stdout
    assert "'tpe.yaml'" in proc.stdout and "'gp.yaml'" in proc.stdout and "'nsgaii.yaml'" in proc.stdout
    assert proc.stdout.strip().endswith("False")  # plugin scan and specsweep imports leave Optuna unloaded


def test_presets_compose_with_our_sweeper():
    from hydra import compose, initialize_config_dir

    from specsweep.config.store import register_configs

    register_configs()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hparams_search=ngram_window"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.specsweep_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.custom_search_space
    assert sweeper.conditions == "specsweep.sweep.study_conditions"


# --- storages: heartbeats and dead owners, on the real storages ----------------------------------------------------


def _storage(kind: str, path: Path, interval: int = 1):
    from hydra_plugins.specsweep_optuna_sweeper._storage import open_storage

    url = f"sqlite:///{path}/s.db" if kind == "sqlite" else f"journal:///{path}/s.log"
    return open_storage(url, heartbeat_interval=interval, grace_period=None, retries=1)


def _running_trial(storage, owner: dict):
    import optuna

    from hydra_plugins.specsweep_optuna_sweeper._storage import OWNER_ATTR

    study = optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
    trial = study.ask()
    trial.suggest_int("k", 1, 10)
    study._storage.set_trial_system_attr(trial._trial_id, OWNER_ATTR, owner)
    return study, trial


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the sweeper records heartbeats itself, as here
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_whose_process_died_on_this_machine_is_failed_and_retried_at_once(tmp_path, kind):
    from hydra_plugins.specsweep_optuna_sweeper._storage import fail_dead_trials, machine_id, this_process

    study, trial = _running_trial(_storage(kind, tmp_path, interval=60), {**this_process(), "pid": _dead_pid()})
    _, alive = _running_trial(study._storage, this_process())  # this process: alive, left alone
    fail_dead_trials(study)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "FAIL", 1: "RUNNING", 2: "WAITING"}  # trial 0 failed, queued again as trial 2
    retry = study.trials[2]
    assert retry.params == trial.params and retry.system_attrs["failed_trial"] == 0
    assert "specsweep:owner" not in retry.system_attrs  # the dead owner is not copied to the retry
    assert machine_id() in study.trials[1].system_attrs["specsweep:owner"]["machine"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_without_heartbeats_is_failed_after_the_grace_period_from_any_machine(tmp_path, kind):
    from hydra_plugins.specsweep_optuna_sweeper._storage import Heartbeat, fail_dead_trials

    elsewhere = {"machine": "another-node", "pid": 1, "started": 0.0}
    study, quiet = _running_trial(_storage(kind, tmp_path), elsewhere)
    _, beating = _running_trial(study._storage, elsewhere)
    with Heartbeat(study._storage, [quiet._trial_id]):
        time.sleep(0.2)  # one heartbeat, then none (the thread stops)
    with Heartbeat(study._storage, [beating._trial_id]):
        time.sleep(3.5)  # grace period: 2 x 1 s (SQLite's clock has whole seconds)
        fail_dead_trials(study)
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "RUNNING", "WAITING"], states


@pytest.mark.parametrize("url, says", [("journal://x.log", "journal:///"), ("journal:///", "journal:///")])
def test_a_bad_journal_url_says_the_form(url, says):
    from hydra_plugins.specsweep_optuna_sweeper._params import SweepConfigError
    from hydra_plugins.specsweep_optuna_sweeper._storage import open_storage

    with pytest.raises(SweepConfigError, match=says):
        open_storage(url, 60, None, 1)


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


# --- real sweeps on a tiny model ----------------------------------------------------------------------------------


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
    args = ["-m", "hparams_search=draft_model_k", f"model.draft={broken}", f"model.target={tiny_model_dir}"]
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


def test_a_rerun_that_measures_an_interrupted_job_again_leaves_a_green_sweep(tmp_path, capsys):
    from omegaconf import OmegaConf

    from specsweep.results import store
    from specsweep.sweep import SweepSummary

    table = tmp_path / store.TABLE_FILE
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    store.append_row(table, {"run_dir": str(tmp_path / "0"), "status": "interrupted", "error": "SIGTERM received"})
    store.append_row(table, {"run_dir": str(tmp_path / "1"), "status": "ok", "error": None})
    with pytest.raises(SystemExit):  # the interrupted run: one job did not end ok
        SweepSummary().on_multirun_end(config)
    assert "1 of 2 jobs did not end ok" in capsys.readouterr().err
    store.append_row(table, {"run_dir": str(tmp_path / "0"), "status": "ok", "error": None})  # the rerun
    SweepSummary().on_multirun_end(config)  # job 0's latest row is ok: no exit
    assert capsys.readouterr().err == ""
