"""A real server that misbehaves mid-measurement (issue 22 §1), besides the SIGKILL of test_served_engines.py: a server
stopped with SIGSTOP (alive, its port open, answering nothing) as its load run starts. Its requests
time out after backend.request_timeout_s, the job is recorded failed in one line, and no process is left: the stopped
server is not kept for reuse but stopped (SIGTERM with SIGCONT, so a stopped process acts on it).

The cheapest real server here is mlx_lm.server (mlx[cpu]) on the tiny random Qwen2: it starts in seconds.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from test_served_engines import MARK, marked

from conftest import results_in, run_main
from specsweep.backends.mlx import config as mlx_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mlx_config.installed(), reason="mlx-lm is not installed"),
]


@pytest.fixture
def stop_marker(tmp_path):
    """This test's marker; after the test, no process that carries it may be left."""
    yield str(tmp_path)
    deadline = time.monotonic() + 10
    while marked(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marked(str(tmp_path)), [p.cmdline() for p in marked(str(tmp_path))]


def _stop_server_once_the_load_run_starts(root: Path, timeout_s: float = 600) -> bool:
    """SIGSTOP the mlx_lm.server (its whole process group) as soon as its log shows a second request: the first is
    specsweep's ready request (part of the start), the second opens the load run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for log in root.rglob("*mlx_lm.server_*.log"):
            if log.read_text(errors="replace").count('"POST /v1/chat/completions') >= 2:
                port = log.stem.rsplit("_", 1)[1]
                for proc in marked(str(root)):
                    if "mlx_lm" in " ".join(proc.cmdline()) and port in proc.cmdline():
                        os.killpg(proc.pid, signal.SIGSTOP)
                        return True
        time.sleep(0.01)
    return False


def test_a_server_stopped_mid_window_times_out_its_requests_and_fails_the_job(tmp_path, tiny_model_dir, stop_marker):
    stopped = []
    watcher = threading.Thread(target=lambda: stopped.append(_stop_server_once_the_load_run_starts(tmp_path)))
    watcher.start()
    start = time.monotonic()
    proc = run_main(
        "backend=mlx_server",
        "model=qwen2.5-coder-0.5b",
        f"model.target={tiny_model_dir}",
        "speculation=none",
        "dataset.num_prompts=3",
        "generation.concurrency=3",
        "generation.max_new_tokens=64",
        "backend.request_timeout_s=10",
        "measurement.warmup=0",
        "measurement.repetitions=1",
        "energy=none",
        "logger=none",
        cwd=tmp_path,
        env={MARK: stop_marker},
        timeout=900,
    )
    watcher.join(timeout=5)
    logs = {log.name: log.read_text(errors="replace")[-1500:] for log in tmp_path.rglob("*.log")}
    assert stopped == [True], (proc.stderr[-2000:], logs)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (result,) = results_in(tmp_path)
    error = result["error"]
    assert result["status"] == "failed" and "\n" not in error, error
    # the first request may have finished before the stop landed: the others cannot have
    assert re.match(
        r"ServerError: mlx_lm.server did not complete [23] of 3 requests \(0 failed, [23] timed out\), ", error
    )
    assert "more than measurement.max_failure_rate=0; first, " in error
    assert "timed out: not done 10 s after it was sent (backend.request_timeout_s)" in error
    print(f"stopped-server job took {time.monotonic() - start:.1f} s")
