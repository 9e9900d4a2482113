"""backend=llamacpp_server with the real llama.cpp server (xllamacpp) on the packaged Qwen2.5-Coder 0.5B as its own
GGUF, started and stopped by main.py as a user runs it. After every test no process carrying the test's marker is
left (the marker and its check are test_served_engines.py's).

Kept short for a 2-core machine: 2 prompts, a few dozen tokens, one repetition.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psutil
import pytest
from test_served_engines import MARK, marked, marker  # noqa: F401  (the marker fixture: no process left after a test)

from conftest import results_in, run_main

pytestmark = pytest.mark.slow

SMALL = [
    "backend=llamacpp_server",
    "model=qwen2.5-coder-0.5b",
    "dataset.num_prompts=2",
    "generation.max_new_tokens=32",
    "measurement.warmup=0",
    "measurement.repetitions=1",
    "measurement.slo_ttft_s=60",
    "measurement.slo_tpot_s=5",
    "energy=none",
    "logger=none",
]
SERVE = "specsweep.backends.llamacpp.serve"
# OpenMP threads that sleep instead of spinning at barriers: with llama.cpp's threads on every core, one other busy
# process (a shared CI machine) made a load run here 10x slower when they spin (docs/llamacpp.md).
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


def test_none_ngram_and_draft_model_at_concurrency_1_and_2(tmp_path, marker):  # noqa: F811
    proc = run_main(
        "-m",
        *SMALL,
        "speculation=none,ngram,draft_model",
        "generation.concurrency=1,2",
        cwd=tmp_path,
        env={MARK: marker, **PASSIVE},
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {(r["method"], r["concurrency"]): r for r in results_in(tmp_path)}
    assert len(results) == 6 and all(r["status"] == "ok" for r in results.values())
    for (method, concurrency), r in results.items():
        env, m, s = r["environment"], r["metrics"], r["serving"]
        assert env["engine"].startswith("llama.cpp server") and env["server_managed"] and env["xllamacpp"]
        assert env["server_slots"] == concurrency and SERVE in env["server_command"]  # one slot per request in flight
        assert env["server_reused"] is False  # each concurrency is a server of its own (n_parallel)
        assert env["engine_env"]["OMP_WAIT_POLICY"] == "PASSIVE"  # inherited by the server, and recorded
        assert s["concurrency"] == concurrency and s["speculative"]["requests"] == 2
        assert s["speculative"]["goodput"] is not None and 0 <= s["speculative"]["goodput_fraction"] <= 1
        assert s["speculative"]["itl_s"]["n"] > 0 and s["speculative"]["ttft_s"]["p50"] > 0
        assert m["tokens_per_s"] > 0 and m["peak_memory_mb"] > 0 and m["ttft_s"] > 0
        if method == "none":
            assert m["drafted_tokens"] is None
            continue
        assert s["baseline"]["requests"] == 2 and m["speedup"] > 0
        assert r["baseline"]["pairing"] == "phased" and r["baseline"]["source"].startswith("reused")  # the none job's
        assert s["acceptance_source"].startswith("the server's /metrics: llamacpp:spec_decode_*")
        # the counters, differenced around the load run: consistent with one another
        k = r["k"]
        assert m["num_drafts"] * k >= m["drafted_tokens"] >= m["accepted_tokens"] >= 0, (method, concurrency, m)
        # both methods draft and get drafts accepted here (ngram: 4 of 16 in every run seen; the 0.5B for itself: all)
        assert m["drafted_tokens"] >= m["accepted_tokens"] > 0, (method, concurrency)
        assert sum(m["acceptance_per_position"]) * m["num_drafts"] == pytest.approx(m["accepted_tokens"])
        assert r["lossless"]["checked"] and "not bit-exact" in r["lossless"]["note"]
    for concurrency in (1, 2):  # the 0.5B drafting for itself: nearly every draft accepted
        m = results[("draft_model", concurrency)]["metrics"]
        assert m["accepted_tokens"] > 0 and m["acceptance_rate"] >= 0.8, m


def _kill_first_server_once_it_decodes(mark: str, timeout_s: float = 600) -> bool:
    """SIGKILL the first llama.cpp server of this test (its whole process group) once it has generated tokens."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in marked(mark):
            try:
                cmd = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if SERVE in cmd and "--port" in cmd:
                try:
                    text = httpx.get(f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}/metrics", timeout=2).text
                except httpx.HTTPError:
                    continue
                predicted = [line for line in text.splitlines() if line.startswith("llamacpp:tokens_predicted_total")]
                if predicted and float(predicted[0].split()[-1]) > 0:
                    os.killpg(proc.pid, signal.SIGKILL)
                    return True
        time.sleep(0.1)
    return False


def test_a_server_killed_mid_run_is_recorded_failed_and_the_sweep_goes_on(tmp_path, marker):  # noqa: F811
    killed = []
    watcher = threading.Thread(target=lambda: killed.append(_kill_first_server_once_it_decodes(marker)))
    watcher.start()
    overrides = [o for o in SMALL if not o.startswith("generation.max_new_tokens")]
    proc = run_main(
        "-m",
        *overrides,
        "speculation=none",
        "generation.concurrency=1,2",
        "generation.max_new_tokens=200",  # long enough that the kill lands inside the load run
        cwd=tmp_path,
        env={MARK: marker},
        timeout=900,
    )
    watcher.join()
    assert killed == [True]
    assert proc.returncode == 1  # a sweep with a failed job ends non-zero, after every job ran
    results = {r["concurrency"]: r for r in results_in(tmp_path)}
    error = results[1]["error"]
    assert results[1]["status"] == "failed" and "\n" not in error
    assert error.startswith("ServerError: llama.cpp server exited with code -9 during the load run; log "), error
    assert results[2]["status"] == "ok" and results[2]["environment"]["server_reused"] is False  # a fresh server


def test_k_by_load_probes_each_level_verifies_and_reports_a_schedule_it_cannot_run(tmp_path, marker):  # noqa: F811
    """hparams_search=k_by_load on the real server: a probe per concurrency level, the best predicted k measured,
    each level's choice from what was measured, the schedule in engine terms (llama.cpp has no per-batch k), and
    llama.cpp's own adaptive draft length (p_min) at every level."""
    from specsweep import load_tuning

    args = ["hydra.sweeper.levels=[1,2]", "hydra.sweeper.probe_k=2", "speculation=draft_model"]
    proc = run_main("-m", "hparams_search=k_by_load", *args, *SMALL, cwd=tmp_path, env={MARK: marker, **PASSIVE})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "outputs" / "sweeps").glob(f"*/{load_tuning.SUMMARY_FILE}")
    summary = json.loads(path.read_text())
    runs = results_in(tmp_path)
    assert len(runs) == 6 and all(r["status"] == "ok" for r in runs)
    fixed = {(r["concurrency"], r["k"]): r for r in runs if not any("p_min" in o for o in r["overrides"])}
    assert sorted(fixed) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [(p["role"], p["concurrency"], p["k"]) for p in summary["points"]] == [
        ("probe", 1, 2),
        ("probe", 2, 2),
        ("verify", 1, 1),
        ("verify", 2, 1),
        ("adaptive", 1, 2),
        ("adaptive", 2, 2),
    ]
    for level in summary["levels"]:
        c = level["concurrency"]
        probe, verified = fixed[(c, 2)]["metrics"], fixed[(c, 1)]["metrics"]
        assert level["curve"][1]["speedup"] == pytest.approx(probe["speedup"])  # the curve passes through its probe
        best = max([(1.0, 0), (probe["speedup"], 2), (verified["speedup"], 1)], key=lambda o: (o[0], -o[1]))
        assert (level["best_k"], level["best_speedup"]) == (best[1], best[0])
        assert level["adaptive"]["p_min"] > 0
    adaptive = [r for r in runs if r not in fixed.values()]
    assert all(r["native_config"]["params"]["speculative.draft.p_min"] == 0.75 for r in adaptive)
    assert min(int(b) for b in summary["schedule"]) == 1
    assert summary["search_s"] == pytest.approx(sum(r["timing"]["generation_s"] for r in fixed.values()))
    off_everywhere = all(level["best_k"] == 0 for level in summary["levels"])
    assert ("paid at no level" if off_everywhere else "takes no per-batch-size k") in summary["note"]
    assert "specsweep k_by_load" in proc.stderr and "the engine's adaptive p_min" in proc.stderr
