"""Fault injection with real faults: real signals to a real job process, real torn files, real concurrent writers,
real unwritable paths, a real edited dataset. Jobs run on the weight-free plugin backend (tests/plugins/)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, isolated_env, results_in, run_main
from specsweep.results import store

PLUGINS = REPO / "tests" / "plugins"


def toy_args(tmp_path: Path, *extra: str) -> list[str]:
    model = tmp_path / "toy-model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return [
        "backend=toy",
        "model.name=toy",
        f"model.target={model}",
        "model.draft=null",
        "logger=none",
        "energy=none",
        "speculation=ngram",
        *extra,
    ]


def toy_env() -> dict:
    return {"PYTHONPATH": str(PLUGINS)}


def start_job(tmp_path: Path, *extra: str) -> subprocess.Popen:
    """A job slow enough to be caught mid-run (0.05 s per token)."""
    args = toy_args(tmp_path, "backend.token_delay_s=0.05", "measurement.repetitions=50", *extra)
    return subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=tmp_path,
        env={**isolated_env(tmp_path), **toy_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_running_record(tmp_path: Path, timeout: float = 60) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list((tmp_path / "outputs").rglob(store.RESULT_FILE)) if (tmp_path / "outputs").exists() else []
        if found and json.loads(found[0].read_text())["status"] == "running":
            time.sleep(1.0)  # well inside the measurement
            return found[0]
        time.sleep(0.1)
    raise AssertionError("no running record appeared")


def test_sigkill_leaves_a_running_record_and_a_rerun_measures_again(tmp_path):
    job = start_job(tmp_path)
    path = wait_for_running_record(tmp_path)
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=30)
    killed = json.loads(path.read_text())
    assert killed["status"] == "running" and killed["config_hash"] and killed["validity"]["key"]
    from specsweep.report.data import load_jobs
    from specsweep.report.html import failures

    (job,) = load_jobs([tmp_path / "outputs" / "runs"])  # the report lists the killed job, though it has no row
    assert job.row["status"] == "running" and "killed" in job.row["error"]
    assert "killed while running" in failures([job]) and str(path.parent) in failures([job])
    rerun = run_main(
        *toy_args(tmp_path, "backend.token_delay_s=0.0", "measurement.repetitions=50"),
        cwd=tmp_path,
        env=toy_env(),
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    statuses = sorted(r["status"] for r in results_in(tmp_path))
    assert statuses == ["ok", "running"]  # measured again, next to the record of the killed job


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_are_recorded_as_interrupted(tmp_path, sig, code):
    job = start_job(tmp_path)
    path = wait_for_running_record(tmp_path)
    job.send_signal(sig)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == code, stderr[-2000:]
    result = json.loads(path.read_text())
    assert result["status"] == "interrupted" and result["finished_at"]
    assert result["error"] == ("SIGTERM received" if sig == signal.SIGTERM else "KeyboardInterrupt")
    (row,) = store.read_table(tmp_path / "outputs" / "runs" / store.TABLE_FILE)
    assert row["status"] == "interrupted"
    assert "Traceback" not in stderr


async def _sigterm_inside_a_task_group() -> None:
    async def signal_self() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)

    async with asyncio.TaskGroup() as group:
        group.create_task(signal_self())


def test_a_sigterm_that_lands_inside_an_async_task_group_is_still_an_interruption(tmp_path):
    """The load generator's httpx connects inside a task group, which wraps the SIGTERM's exception in a
    BaseExceptionGroup; it was recorded `failed` and exited 1 (CI, the vLLM server's SIGTERM test) instead of 143."""
    from specsweep.config.compose import compose_config
    from specsweep.config.register import register_configs
    from specsweep.job import JobPaths, recording

    register_configs()
    cfg = compose_config(["logger=none", "energy=none"])
    paths = JobPaths(tmp_path / "run", tmp_path / "results.jsonl", tmp_path / "results.jsonl", [], multirun=False)
    paths.run_dir.mkdir()
    with pytest.raises(SystemExit) as exited:
        with recording(cfg, paths):
            asyncio.run(_sigterm_inside_a_task_group())
    assert exited.value.code == 143
    result = json.loads((paths.run_dir / store.RESULT_FILE).read_text())
    assert result["status"] == "interrupted" and result["error"] == "SIGTERM received"


def test_a_sigterm_that_a_library_turns_into_another_error_is_still_an_interruption(tmp_path):
    """CI: the SIGTERM landed while an extension module was being imported, which reported "ImportError:
    initialization failed" with the JobInterrupted gone; the job was recorded failed and the sweep did not stop."""
    import time

    from specsweep.config.compose import compose_config
    from specsweep.config.register import register_configs
    from specsweep.job import JobPaths, recording

    register_configs()
    cfg = compose_config(["logger=none", "energy=none"])
    paths = JobPaths(tmp_path / "run", tmp_path / "results.jsonl", tmp_path / "results.jsonl", [], multirun=False)
    paths.run_dir.mkdir()
    with pytest.raises(SystemExit) as exited:
        with recording(cfg, paths):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
            except BaseException:
                raise ImportError("initialization failed") from None  # as the C import machinery reports it
    assert exited.value.code == 143
    result = json.loads((paths.run_dir / store.RESULT_FILE).read_text())
    assert result["status"] == "interrupted" and result["error"] == "SIGTERM received"


def _append_rows(table: str, writer: int, count: int) -> None:
    for i in range(count):
        store.append_row(Path(table), {"writer": writer, "i": i, "pad": "x" * 3000})  # > PIPE_BUF: not atomic alone


def test_many_processes_appending_to_one_table_lose_nothing(tmp_path):
    table = tmp_path / "results.jsonl"
    procs = [
        multiprocessing.get_context("spawn").Process(target=_append_rows, args=(str(table), w, 50)) for w in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    lines = table.read_text().splitlines()
    assert len(lines) == 300 and all(json.loads(line)["pad"] for line in lines)  # every line parses
    rows = list(store.read_table(table))
    assert sorted((r["writer"], r["i"]) for r in rows) == [(w, i) for w in range(6) for i in range(50)]


def test_a_torn_last_line_does_not_swallow_the_next_row(tmp_path):
    table = tmp_path / "results.jsonl"
    store.append_row(table, {"n": 1})
    with open(table, "a") as f:
        f.write('{"n": 2, "status": "o')  # a writer killed mid-line
    store.append_row(table, {"n": 3})
    assert [json.loads(line)["n"] for line in table.read_text().splitlines() if line.endswith("}")] == [1, 3]
    store.rows_dir(table).joinpath("gone").mkdir()  # row files lost (or never written): the table still answers
    for path in store.rows_dir(table).glob("*.json"):
        path.unlink()
    assert [r["n"] for r in store.read_table(table)] == [1, 3]


def test_an_edited_dataset_is_measured_again_and_says_why(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "abc abc abc abc"}\n')
    args = toy_args(tmp_path, "dataset=jsonl", f"dataset.path={prompts}")
    first = run_main(*args, cwd=tmp_path, env=toy_env(), timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_main(*args, cwd=tmp_path, env=toy_env(), timeout=300)
    assert again.returncode == 0 and "reusing the ok result" in again.stdout + again.stderr
    reused = [r for r in results_in(tmp_path) if r.get("reused_from")]
    assert len(reused) == 1 and Path(reused[0]["reused_from"]).is_dir()
    prompts.write_text('{"id": "a", "prompt": "xyz xyz xyz xyz"}\n')
    edited = run_main(*args, cwd=tmp_path, env=toy_env(), timeout=300)
    log = edited.stdout + edited.stderr
    assert edited.returncode == 0 and "measuring again" in log and "dataset_sha256" in log
    latest = max(results_in(tmp_path), key=lambda r: r["started_at"])
    assert latest["validity"]["remeasured_because"] == ["dataset_sha256"] and latest["reused_from"] is None


def test_an_unwritable_wandb_dir_and_an_unreachable_server_keep_local_results(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where W&B wants a directory")
    env = {
        **toy_env(),
        "HOME": str(tmp_path / "home"),
        "WANDB_API_KEY": "x" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
    }  # nothing listens on port 9
    for extra in (
        ["logger=wandb", f"logger.dir={blocker}/wandb"],
        ["logger=wandb", "logger.mode=online", "logger.init_timeout=5"],
    ):
        args = [a for a in toy_args(tmp_path, "force=true") if a != "logger=none"] + extra
        proc = run_main(*args, cwd=tmp_path, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["status"] for r in results_in(tmp_path)] == ["ok", "ok"]
    assert len(list(store.read_table(tmp_path / "outputs" / "runs" / store.TABLE_FILE))) == 2


def test_a_grid_sweep_with_invalid_jobs_is_refused_whole_before_anything_runs(tmp_path):
    args = toy_args(tmp_path, "speculation=ngram,none,eagle", "speculation.num_speculative_tokens=3")
    proc = run_main("-m", *args, cwd=tmp_path, env=toy_env(), timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("specsweep: config error: 2 of 3 sweep jobs are invalid")
    assert "speculation=none" in lines[1] and "expected null when speculation.method=none" in lines[1]
    assert "speculation=eagle" in lines[2] and "a method backend=toy supports: none, ngram" in lines[2]
    assert len(lines) == 3 and not (tmp_path / "outputs").exists()


def test_run_valid_runs_the_rest_and_the_sweep_ends_with_a_summary_and_exit_1(tmp_path):
    args = toy_args(tmp_path, "speculation=ngram,none", "speculation.num_speculative_tokens=3")
    proc = run_main("-m", *args, "--run-valid", cwd=tmp_path, env=toy_env(), timeout=300)
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "Error executing job" not in output
    assert "specsweep: 1 of 2 jobs did not end ok:" in proc.stderr
    assert sorted(r["status"] for r in results_in(tmp_path)) == ["failed", "ok"]


def test_a_literal_secret_on_the_command_line_is_refused_in_one_line_without_echoing_it(tmp_path):
    secret = "hf_sekrit_value_123"
    proc = run_main(*toy_args(tmp_path), f"+speculation.backend_overrides.hf_token={secret}", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and secret not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "specsweep: config error: +speculation.backend_overrides.hf_token=<redacted> is invalid: expected the "
        "environment-variable form +speculation.backend_overrides.hf_token='${oc.env:HF_TOKEN}' (a literal secret "
        "on the command line would be saved verbatim under .hydra/)"
    ]
    assert not (tmp_path / "outputs").exists()


def test_secret_looking_values_never_reach_any_file_under_run_and_sweep_dirs(tmp_path):
    from specsweep.results.redact import is_secret

    assert is_secret("hf_token") and is_secret("WANDB_API_KEY") and is_secret("password") and is_secret("auth")
    assert not any(map(is_secret, ["max_new_tokens", "num_speculative_tokens", "kv_cache_gib", "cache_key", "keys"]))
    secret = "hf_sekrit_value_123"
    args = [a for a in toy_args(tmp_path) if a != "logger=none"]
    env = {**toy_env(), "HOME": str(tmp_path / "home"), "SPECSWEEP_TEST_HF_TOKEN": secret}
    override = "+speculation.backend_overrides.hf_token=${oc.env:SPECSWEEP_TEST_HF_TOKEN}"
    for mode in ([], ["-m"]):  # a run dir, then a sweep dir (multirun.yaml) with its job dir
        proc = run_main(*mode, *args, "logger=wandb", override, "force=true", cwd=tmp_path, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    results = results_in(tmp_path)
    assert len(results) == 2
    for result in results:
        assert result["config"]["speculation"]["backend_overrides"]["hf_token"] == "<redacted>"
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "overrides.yaml" for p in files) and any(p.name == "multirun.yaml" for p in files)
    leaks = [p for p in files if secret.encode() in p.read_bytes()]
    assert not leaks  # .hydra/, multirun.yaml, result.json, the tables, the row files and the W&B run are clean
    assert list((tmp_path / "outputs").rglob("run-*.wandb"))  # the W&B run was written
