"""Sweeps without a model: the Optuna sweeper's search-space parsing, storages, dead trials and study conditions,
the define-by-run window space, the sweep summary. Real sweeps on a tiny model (resume, SLURM-style concurrent
processes, optuna-dashboard, SIGKILL mid-sweep, the submitit launcher) are in tests/integration/test_sweeps_e2e.py."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from specsweep.sweep import NGRAM_WINDOW_LIMIT, ngram_window

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

    from specsweep.config.register import register_configs

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
