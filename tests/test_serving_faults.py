"""The served path against a server that misbehaves (issue 22 §1), with the fault-injecting stand-in
(tests/fake_openai_server.py --fault, --metrics, --health-status, --bind-delay). Each fault has a stated outcome:

- HTTP 500 / 429 / 503, a malformed chunk, a connection reset mid-stream, a non-stream content type, a stream that
  ends before [DONE]: that request `failed`, with the reason; the others are ok.
- A stream that stalls mid-answer: that request `timed_out` after backend.request_timeout_s; the run does not wait.
- More failed + timed-out requests than measurement.max_failure_rate: the job fails in one line (counts, limit,
  first reason). As many or fewer: the job is ok, its figures are the ok requests', the counts and rate beside them
  (result.json `serving`, the console summary).
- A request timed out: the server is stopped, not kept for the next job; a stopped (SIGSTOP) server stops at once.
- A server that never becomes healthy (/health 503): ServerError after backend.startup_timeout_s, nothing left.
- A port already in use by another healthy server: its answer is not taken for ours; ServerError naming the port.
- /metrics missing or malformed from the start of a speculative vLLM job: the job fails at load, one line.
- /metrics missing, malformed, or counters that go backwards mid-job: acceptance refused (null, with the reason).

The real-server fault (SIGSTOP mid-window) is in tests/integration/test_served_faults.py (slow).
"""

from __future__ import annotations

import re
import time

import pytest

from conftest import results_in, run_main
from specsweep.serving import loadgen as load_gen
from specsweep.serving import server as server_mod
from specsweep.serving.server import ManagedServer, ServerError
from specsweep.session import Session
from test_serving import fake_engine, fake_spec, group_alive, requests, served_cfg


@pytest.fixture
def fake_server(tmp_path):
    servers = []

    def start(*flags: str) -> ManagedServer:
        server = ManagedServer(fake_spec(tmp_path, *flags))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        assert not group_alive(server)


# --- the load generator: every request ok, failed (with the reason) or timed out ----------------------------------


@pytest.mark.parametrize(
    "fault,outcome,reason",
    [
        ("500", "failed", r"^RuntimeError: HTTP 500: .*fake fault: HTTP 500"),
        ("429", "failed", r"^RuntimeError: HTTP 429: "),
        ("503", "failed", r"^RuntimeError: HTTP 503: "),
        ("malformed", "failed", r"^RuntimeError: malformed event-stream chunk: "),
        ("reset", "failed", r"^(ReadError|RemoteProtocolError)"),
        ("content-type", "failed", r"^RuntimeError: expected a text/event-stream response, got .*application/json"),
        ("no-done", "failed", r"^RuntimeError: the stream ended before data: \[DONE\]"),
        ("stall", "timed_out", r"^timed out: not done 1 s after it was sent \(backend.request_timeout_s\)"),
    ],
)
def test_a_faulty_request_is_recorded_with_its_outcome_and_the_others_are_ok(fake_server, fault, outcome, reason):
    server = fake_server("--fault", fault, "--fault-every", "3", "--stall-s", "30")
    start = time.perf_counter()
    records = load_gen.run_load(server.url, requests(6), concurrency=2, timeout_s=1.0)
    assert time.perf_counter() - start < 5  # a stalled stream is cut at its timeout, not waited for
    assert [r.prompt_id for r in records] == [f"p{i}" for i in range(6)]  # none dropped
    bad = [r for r in records if r.outcome != "ok"]
    assert len(bad) == 2 and {r.outcome for r in bad} == {outcome}  # the server's 3rd and 6th requests
    for r in bad:
        assert r.error and "\n" not in r.error
        assert re.match(reason, r.error), r.error
        assert r.e2e_s is None and (r.timed_out is (outcome == "timed_out"))
    for r in records:
        if r.outcome == "ok":
            assert r.error is None and r.e2e_s > 0 and len(r.token_ids) == 5


# --- the server lifecycle ---------------------------------------------------------------------------------------------


def test_a_server_whose_health_stays_503_times_out_and_is_stopped(tmp_path):
    server = ManagedServer(fake_spec(tmp_path, "--health-status", "503", "--child", timeout=2))
    start = time.perf_counter()
    with pytest.raises(ServerError, match=r"^fake server was not healthy within 2 s \(backend.startup_timeout_s\)"):
        server.start()
    assert time.perf_counter() - start < 8
    assert not server.alive() and not group_alive(server)


def test_a_port_taken_by_another_server_is_not_mistaken_for_ours(tmp_path, fake_server, monkeypatch):
    other = fake_server()  # healthy, on the port ours is about to be given
    monkeypatch.setattr(server_mod, "free_port", lambda host="127.0.0.1": other.port)
    ours = ManagedServer(fake_spec(tmp_path, "--bind-delay", "1.5", timeout=20))  # binds late, as a model load does
    with pytest.raises(ServerError) as err:
        ours.start()
    message = str(err.value)
    assert "\n" not in message and message.startswith("fake server exited with code 1 before it was healthy")
    assert f"(port {other.port} was answered by a process that is not this server)" in message
    assert "Address already in use" in message  # the server's own complaint, from its log
    assert not ours.alive() and not group_alive(ours) and other.alive()


def test_a_stopped_server_is_stopped_at_once_not_after_the_grace_period(tmp_path):
    import os
    import signal

    server = ManagedServer(fake_spec(tmp_path, "--child"))
    server.start()
    os.killpg(server.proc.pid, signal.SIGSTOP)  # as a debugger or an operator might leave it
    start = time.perf_counter()
    server.stop()
    assert time.perf_counter() - start < server_mod.STOP_GRACE_S / 2  # SIGCONT let it act on SIGTERM
    assert not server.alive() and not group_alive(server)


# --- a served engine: the failure rate, timeouts, /metrics -----------------------------------------------------------


def prompts_of(cfg):
    from specsweep.datasets import load_prompts

    return load_prompts(cfg.dataset)


def test_failures_above_max_failure_rate_fail_the_load_run_in_one_line(tmp_path):
    cfg = served_cfg(tmp_path, "speculation=none")  # measurement.max_failure_rate: 0 by default
    session = Session()
    try:
        engine = fake_engine(cfg, session, "--fault", "503", "--fault-every", "3")
        with pytest.raises(ServerError) as err:
            engine.generate(prompts_of(cfg))
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(
            "fake server did not complete 1 of 3 requests (1 failed, 0 timed out), more than "
            "measurement.max_failure_rate=0; first, "
        )
        assert re.search(r"; first, [\w-]+: RuntimeError: HTTP 503: ", message) and [
            r.outcome for r in engine.window_failures()
        ] == ["failed"]
        engine.close()
    finally:
        session.close()


def test_failures_within_max_failure_rate_leave_the_ok_requests_and_count_the_rest(tmp_path):
    cfg = served_cfg(tmp_path, "speculation=none", "measurement.max_failure_rate=0.4")
    session = Session()
    try:
        engine = fake_engine(cfg, session, "--fault", "429", "--fault-every", "3")
        start = time.perf_counter()
        gens = engine.generate(prompts_of(cfg))
        assert time.perf_counter() - start < 2  # a tolerated failure adds no wait (for a death) to the timed window
        failed = engine.window_failures()
        assert len(gens) == 2 and len(failed) == 1 and failed[0].outcome == "failed"
        assert {g.prompt_id for g in gens} | {failed[0].prompt_id} == {p.id for p in prompts_of(cfg)}
        engine.close()
    finally:
        session.close()


def test_timed_out_requests_fail_the_job_and_the_server_is_not_kept(tmp_path):
    cfg = served_cfg(tmp_path, "speculation=none", "backend.request_timeout_s=1", "generation.concurrency=3")
    session = Session()
    engine = fake_engine(cfg, session, "--fault", "stall", "--fault-every", "2", "--stall-s", "60")
    server = engine.server
    try:
        start = time.perf_counter()
        with pytest.raises(
            ServerError, match=r"^fake server did not complete 1 of 3 requests \(0 failed, 1 timed out\)"
        ):
            engine.generate(prompts_of(cfg))
        assert time.perf_counter() - start < 8  # 1 s timeout + the 3 s a failure waits to see the server die
    finally:
        engine.close()
    assert not session.slot("serving.servers").keys()  # a server that stalled is not handed to the next job
    assert not server.alive() and not group_alive(server)
    session.close()


@pytest.mark.parametrize("kind", ["missing", "malformed"])
def test_a_metrics_endpoint_broken_from_the_start_fails_a_speculative_job_at_load(tmp_path, kind):
    cfg = served_cfg(tmp_path, "speculation=ngram")
    session = Session()
    try:
        with pytest.raises(ServerError, match=r"^could not read http://127.0.0.1:\d+/metrics: "):
            fake_engine(cfg, session, "--spec", "--metrics", kind)
    finally:
        session.close()


@pytest.mark.parametrize(
    "flags,reason",
    [
        (["--metrics", "missing"], r"^refused: could not read .*/metrics: .*404"),
        (["--metrics", "malformed"], r"^refused: could not read .*/metrics: ValueError"),
        (
            ["--metrics", "backwards", "--counters-from", "100"],
            r"^refused: the server's spec-decode counters",
        ),
    ],
)
def test_acceptance_from_a_metrics_endpoint_that_breaks_mid_job_is_refused(tmp_path, flags, reason):
    """The counters answer at load and before the window, then break (after the first request): the window's
    acceptance is not reported (null, with the reason), and neither is the phase's."""
    from specsweep.energy import NoEnergyMeter
    from specsweep.measure.phases import measure_phase
    from specsweep.measure.runner import _progress

    cfg = served_cfg(tmp_path, "speculation=ngram", "measurement.warmup=0", "measurement.repetitions=2")
    session = Session()
    try:
        engine = fake_engine(cfg, session, "--spec", *flags, "--metrics-after", "1")
        with _progress() as progress:
            phase = measure_phase(engine, prompts_of(cfg), cfg, NoEnergyMeter(), "speculative", progress)
        facts = engine.acceptance_facts()
        assert re.match(reason, facts["acceptance_unavailable_reason"]), facts
        assert facts["acceptance_source"] is None and phase.acceptance() is None
        assert len(phase.all()) == 6  # the load itself was measured
        engine.close()
    finally:
        session.close()


# --- through main.py: the failure count and rate in result.json and the summary, the limit, refused acceptance ------


def test_a_sweep_records_failures_beside_the_figures_and_fails_the_job_over_the_limit(tmp_path, fake_server):
    # the speculative server fails every 3rd request (503), and its counters restart from 0 once 4 have arrived
    spec = fake_server(
        "--spec",
        "--fault",
        "503",
        "--fault-every",
        "3",
        "--metrics",
        "backwards",
        "--metrics-after",
        "4",
        "--counters-from",
        "100",
    )
    plain = fake_server()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    proc = run_main(
        "-m",
        "backend=vllm_server",
        "speculation=ngram",
        "measurement.max_failure_rate=0,0.5",
        "model=qwen2.5-coder-0.5b",
        f"model.target={model}",
        f"backend.url={spec.url}",
        f"backend.baseline_url={plain.url}",
        "generation.max_new_tokens=6",
        "dataset.num_prompts=3",
        "measurement.warmup=0",
        "measurement.repetitions=1",
        "energy=none",
        "logger=none",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # one job failed; the sweep ran both
    jobs = {r["status"]: r for r in results_in(tmp_path)}
    assert set(jobs) == {"failed", "ok"}
    error = jobs["failed"]["error"]
    assert "\n" not in error and "did not complete 1 of 3 requests (1 failed, 0 timed out), more than " in error
    assert "measurement.max_failure_rate=0;" in error and "HTTP 503" in error
    ok = jobs["ok"]
    load = ok["serving"]["speculative"]
    assert (load["requests"], load["ok_requests"], load["failed_requests"], load["timed_out_requests"]) == (3, 2, 1, 0)
    assert load["failure_rate"] == pytest.approx(1 / 3) and load["failures"][0]["outcome"] == "failed"
    assert load["failures"][0]["error"].startswith("RuntimeError: HTTP 503") and load["ttft_s"]["n"] == 2
    assert load["output_throughput"] == pytest.approx(ok["metrics"]["tokens_per_s"])
    assert ok["metrics"]["output_tokens"] == 2 * 6  # the ok requests' tokens only
    assert ok["serving"]["baseline"]["failure_rate"] == 0 and ok["serving"]["baseline"]["ok_requests"] == 3
    # counters that went backwards: acceptance refused, not reported
    assert ok["metrics"]["acceptance_rate"] is None and ok["metrics"]["num_drafts"] is None
    assert "went backwards" in ok["serving"]["acceptance_unavailable_reason"]
    assert "requests: 2 ok, 1 failed, 0 timed out (failure rate 0.333; first: RuntimeError: HTTP 503" in proc.stderr


# --- llama.cpp's server: each window's /metrics counts checked against its responses' own timings ---------------------


@pytest.mark.parametrize("skew", [0, 1])
def test_llamacpp_server_window_counts_agree_with_the_responses_timings_or_acceptance_is_refused(fake_server, skew):
    """The stand-in as llama.cpp's server: /metrics counts each draft step, and each response's last chunk reports
    its own draft_n / draft_n_accepted. Agreeing, the window's counts are reported; off by one accepted token per
    request (as when another client shares the server), acceptance is refused with both figures."""
    from conftest import native_config
    from specsweep.backends.llamacpp.server_backend import LlamacppServerBackend
    from specsweep.config.compose import compose_config
    from specsweep.models.resolve import ResolvedModels

    server = fake_server("--spec", "--llamacpp", "--timings-skew", str(skew))
    overrides = ["model=qwen2.5-coder-0.5b", "speculation=ngram", "generation.max_new_tokens=6"]
    cfg = compose_config(["backend=llamacpp_server", f"backend.url={server.url}", *overrides])
    session = Session()
    try:
        engine = LlamacppServerBackend(cfg, native_config(cfg), ResolvedModels(cfg.model.target), session)
        engine.load()
        engine.begin_window()
        gens = engine.generate(prompts_of(cfg)[:3])
        window = engine.window_acceptance()
        assert [len(g.output_ids) for g in gens] == [6, 6, 6]  # the streamed text, tokenized by the server
        if skew == 0:
            assert (window.num_drafts, window.drafted, window.accepted) == (9, 18, 9)  # 3 requests x 3 steps of 2
            assert engine.acceptance_facts()["acceptance_unavailable_reason"] is None
        else:
            assert window is None
            reason = engine.acceptance_facts()["acceptance_unavailable_reason"]
            assert reason == (
                "refused: the server's /metrics counted 18 drafted and 9 accepted tokens in a window whose responses' "
                "timings report 18 and 12 (another client?)"
            )
        engine.close()
    finally:
        session.close()
