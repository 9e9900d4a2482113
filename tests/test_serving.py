"""The served path without a model: the server lifecycle, the load generator, the Prometheus reading, validation and a
whole served sweep through main.py, against a stand-in OpenAI-API server (tests/fake_openai_server.py).

The real servers (vllm serve, mlx_lm.server) on tiny models are in tests/integration/test_served_engines.py (slow).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import psutil
import pytest

from conftest import results_in, run_main
from specsweep.backends.vllm.counters import VLLM_COUNTERS
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import ConfigError, validate
from specsweep.serving import loadgen as load_gen
from specsweep.serving.prometheus import NoCounters, counters_from_text
from specsweep.serving.server import PORT, ManagedServer, ServerError, ServerSpec
from specsweep.session import Session

register_configs()
FAKE = str(Path(__file__).with_name("fake_openai_server.py"))


def fake_spec(tmp_path, *flags: str, timeout: float = 30.0) -> ServerSpec:
    command = [sys.executable, FAKE, "--port", PORT, *flags]
    return ServerSpec("fake server", command, startup_timeout_s=timeout, log_dir=str(tmp_path / "servers"))


def group_alive(server: ManagedServer) -> list:
    """Live processes of the server's process group (zombies are not alive)."""
    return server.group_members()


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


# --- Prometheus ------------------------------------------------------------------------------------------------------


def test_spec_decode_counters_are_parsed_summed_over_labels_and_differenced():
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    drafts = Counter("vllm:spec_decode_num_drafts", "", ["engine"], registry=registry)
    drafted = Counter("vllm:spec_decode_num_draft_tokens", "", ["engine"], registry=registry)
    accepted = Counter("vllm:spec_decode_num_accepted_tokens", "", ["engine"], registry=registry)
    per_pos = Counter("vllm:spec_decode_num_accepted_tokens_per_pos", "", ["engine", "position"], registry=registry)
    for engine, n in (("0", 3), ("1", 2)):  # two engines (data parallel): their counts add up
        drafts.labels(engine).inc(n)
        drafted.labels(engine).inc(3 * n)
        accepted.labels(engine).inc(n + 1)
        per_pos.labels(engine, "0").inc(n)
        per_pos.labels(engine, "2").inc(1)
    before = counters_from_text(generate_latest(registry).decode(), VLLM_COUNTERS)
    assert (before.num_drafts, before.drafted, before.accepted) == (5, 15, 7)
    assert before.accepted_per_position == [5, 0, 2]
    drafts.labels("0").inc(4)
    drafted.labels("0").inc(12)
    accepted.labels("0").inc(6)
    per_pos.labels("0", "1").inc(6)
    window = counters_from_text(generate_latest(registry).decode(), VLLM_COUNTERS) - before
    assert (window.num_drafts, window.drafted, window.accepted, window.accepted_per_position) == (4, 12, 6, [0, 6, 0])
    with pytest.raises(NoCounters):
        counters_from_text("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n", VLLM_COUNTERS)


# --- the load generator ----------------------------------------------------------------------------------------------


def test_poisson_arrivals_are_seeded_and_have_the_asked_rate():
    assert load_gen.arrival_offsets(3, None, 0) == [0.0, 0.0, 0.0]
    offsets = load_gen.arrival_offsets(4000, 5.0, seed=1)
    assert offsets == load_gen.arrival_offsets(4000, 5.0, seed=1) and offsets[0] == 0.0
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert statistics.mean(gaps) == pytest.approx(1 / 5.0, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(1 / 5.0, rel=0.08)  # exponential: sd = mean


def requests(n: int, max_tokens: int = 5, path: str = "/v1/chat/completions") -> list:
    field = "messages" if path.endswith("chat/completions") else "prompt"
    out = []
    for i in range(n):
        prompt = [{"role": "user", "content": "x" * (i + 1)}] if field == "messages" else "x" * (i + 1)
        out.append(load_gen.Request(f"p{i}", path, {field: prompt, "max_tokens": max_tokens, "return_token_ids": True}))
    return out


def test_streaming_records_per_request_at_a_fixed_concurrency(fake_server):
    import httpx

    server = fake_server("--delay", "0.03")
    records = load_gen.run_load(server.url, requests(6), concurrency=2)
    assert [r.prompt_id for r in records] == [f"p{i}" for i in range(6)] and not any(r.error for r in records)
    for i, r in enumerate(records):
        assert r.token_ids == [(i + 1 + j) % 50 + 10 for j in range(5)] and r.completion_tokens == 5
        assert r.text == "".join(f"t{t} " for t in r.token_ids)
        assert len(r.itl_s) == 4 and all(gap > 0.02 for gap in r.itl_s)  # one chunk per token, 30 ms apart
        assert 0.02 < r.ttft_s < r.e2e_s
    assert max(r.queued_s for r in records) > 0.1  # 6 requests, 2 slots: later ones waited for a slot
    gauge = [line for line in httpx.get(server.url + "/metrics").text.splitlines() if line.startswith("fake_max")]
    assert gauge == ["fake_max_in_flight 2"]  # the server saw 2 requests at once, never more


def test_poisson_arrivals_send_requests_at_their_arrival_times(fake_server):
    import time

    server = fake_server()
    start = time.perf_counter()
    records = load_gen.run_load(server.url, requests(4, max_tokens=2), concurrency=4, request_rate=10.0, seed=3)
    wall = time.perf_counter() - start
    offsets = load_gen.arrival_offsets(4, 10.0, seed=3)
    assert [r.scheduled_s for r in records] == offsets and not any(r.error for r in records)
    assert wall >= offsets[-1]  # the last request could not go before it arrived
    assert all(r.queued_s < 0.05 for r in records)  # 4 slots: nobody waited for one


def test_plain_completions_and_a_failed_request_are_recorded(fake_server):
    server = fake_server()
    good, bad = load_gen.run_load(
        server.url, [*requests(1, path="/v1/completions"), *requests(1, max_tokens=999)], concurrency=2
    )
    assert good.error is None and good.text.startswith("t") and good.token_ids
    assert bad.error.startswith("RuntimeError: HTTP 400") and "refused by the fake server" in bad.error


# --- the server lifecycle --------------------------------------------------------------------------------------------


def test_a_server_is_health_waited_and_its_whole_process_group_is_stopped(fake_server):
    server = fake_server("--child")
    assert server.alive() and server.start_s > 0 and server.log_path.is_file()
    members = group_alive(server)
    assert len(members) >= 2  # the server and the helper it started
    server.stop()
    assert not server.alive() and not group_alive(server)
    assert all(not psutil.pid_exists(p.pid) or p.status() == psutil.STATUS_ZOMBIE for p in members)


def test_a_server_that_cannot_start_fails_in_one_line_quoting_its_log(tmp_path):
    server = ManagedServer(fake_spec(tmp_path, "--exit-at-start"))
    with pytest.raises(ServerError) as err:
        server.start()
    message = str(err.value)
    assert "\n" not in message and message.startswith("fake server exited with code 2 before it was healthy")
    assert "refusing to start (--exit-at-start)" in message and str(server.log_path) in message
    assert not group_alive(server)


def test_a_server_that_never_gets_healthy_times_out_and_is_stopped(tmp_path):
    server = ManagedServer(fake_spec(tmp_path, "--never-healthy", "--child", timeout=2))
    with pytest.raises(ServerError, match=r"^fake server was not healthy within 2 s \(backend.startup_timeout_s\)"):
        server.start()
    assert not server.alive() and not group_alive(server)


# --- a served engine in-process: kept in the session, reused, a server that dies mid-run ---------------------------


def served_cfg(tmp_path, *overrides: str):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    cfg = compose_config(
        [
            "backend=vllm_server",
            "model=qwen2.5-coder-0.5b",
            f"model.target={model}",
            f"backend.log_dir={tmp_path / 'servers'}",
            "generation.max_new_tokens=6",
            "dataset.num_prompts=3",
            *overrides,
        ]
    )
    validate(cfg)
    return cfg


def fake_engine(cfg, session, *flags: str):
    from conftest import native_config
    from specsweep.backends.vllm.server_backend import VllmServerBackend
    from specsweep.models.resolve import ResolvedModels

    class FakeServed(VllmServerBackend):
        def server_spec(self):
            return fake_spec(Path(cfg.backend.log_dir).parent, *flags)

    engine = FakeServed(cfg, native_config(cfg), ResolvedModels(cfg.model.target), session)
    engine.load()
    return engine


def test_a_kept_server_is_reused_by_the_same_config_and_counts_a_window(tmp_path):
    from specsweep.datasets import load_prompts

    cfg = served_cfg(tmp_path, "speculation=ngram", "generation.concurrency=2")
    prompts = load_prompts(cfg.dataset)
    session = Session()
    try:
        engine = fake_engine(cfg, session, "--spec")
        first = engine.server
        engine.begin_window()
        gens = engine.generate(prompts)
        window = engine.window_acceptance()
        assert (window.num_drafts, window.drafted, window.accepted) == (9, 18, 9)  # 3 requests x 3 steps of 2
        assert all(len(g.output_ids) == 6 and g.ttft_s > 0 and len(g.itl_s) == 2 for g in gens)
        engine.close()
        again = fake_engine(cfg, session, "--spec")
        assert again.reused and again.server is first and again.server_facts()["server_start_s"] is None
        again.close()
    finally:
        session.close()
    assert not first.alive() and not group_alive(first)


def test_a_server_that_dies_mid_run_raises_one_line_and_is_not_kept(tmp_path):
    from specsweep.datasets import load_prompts

    cfg = served_cfg(tmp_path, "speculation=none")
    session = Session()
    engine = fake_engine(cfg, session, "--die-after", "1", "--child")
    server = engine.server
    try:
        with pytest.raises(ServerError) as err:
            engine.generate(load_prompts(cfg.dataset))
        assert "\n" not in str(err.value)
        assert str(err.value).startswith("fake server exited with code 3 during the load run")
        assert "dying at request 2" in str(err.value)
    finally:
        engine.close()
    assert not session.slot("serving.servers").keys() and not group_alive(server)


# --- validation ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["backend=vllm", "generation.concurrency=4"],
            r"^generation.concurrency=4 is invalid: expected 1 on backend=vllm: load settings need a served backend",
        ),
        (["backend=pytorch", "generation.request_rate=2"], r"^generation.request_rate=2.0 is invalid: expected null"),
        (["backend=vllm_server", "generation.batch_size=2"], r"^generation.batch_size=2 is invalid: expected 1 on"),
        (["backend=vllm_server", "generation.concurrency=0"], r"^generation.concurrency=0 is invalid: expected an"),
        (["backend=vllm_server", "generation.request_rate=0"], r"^generation.request_rate=0.0 is invalid"),
        (
            ["backend=vllm_server", "speculation=ngram", "backend.url=http://gpu:8000"],
            r"^backend.baseline_url=None is invalid: expected the URL of the same model served without speculation",
        ),
        (["backend=vllm_server", "backend.url=gpu:8000"], r"^backend.url='gpu:8000' is invalid: expected an http://"),
        (
            ["backend=vllm_server", "backend.extra_args=['--port=9000']"],
            r"^backend.extra_args='--port=9000' is invalid: expected no --port: use nothing",
        ),
        (
            ["backend=mlx_server", "speculation=ngram"],
            r"^speculation.method='ngram' is invalid: expected a method backend=mlx_server supports: none, draft",
        ),
        (
            ["backend=mlx_server", "backend.extra_args=[--num-draft-tokens,4]"],
            r"^backend.extra_args='--num-draft-tokens' is invalid: expected no --num-draft-tokens",
        ),
        (["backend=mlx_server", "measurement.slo_ttft_s=0"], r"^measurement.slo_ttft_s=0.0 is invalid"),
    ],
)
def test_invalid_served_configs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(["model=qwen2.5-coder-0.5b", *overrides]))


def test_dry_run_prints_the_exact_server_command_line(tmp_path):
    proc = run_main(
        "backend=vllm_server",
        "speculation=ngram",
        "model=qwen2.5-coder-0.5b",
        "backend.extra_args=[--max-log-len,10]",
        "--dry-run",
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    native = json.loads(proc.stdout)["native_config"]
    line = native["server_command_line"]
    assert ("-m vllm.entrypoints.openai.api_server --model " in line or " serve " in line) and "--port '{port}'" in line
    assert line.endswith("--max-log-len 10")
    assert '--speculative-config \'{"method": "ngram", "num_speculative_tokens": 4' in line
    assert native["request"] == {"max_tokens": 64, "temperature": 0.0, "return_token_ids": True}
    assert not (tmp_path / "outputs").exists()


# --- a whole served sweep through main.py, against running servers (backend.url) -------------------------------------


def test_a_served_sweep_over_method_and_concurrency_records_and_reports(tmp_path, fake_server):
    from specsweep.report.html import write

    spec, plain = fake_server("--spec", "--delay", "0.02"), fake_server("--delay", "0.02")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    proc = run_main(
        "-m",
        "backend=vllm_server",
        "speculation=none,ngram",
        "generation.concurrency=1,3",
        "model=qwen2.5-coder-0.5b",
        f"model.target={model}",
        f"backend.url={spec.url}",
        f"backend.baseline_url={plain.url}",
        "generation.max_new_tokens=8",
        "dataset.num_prompts=3",
        "measurement.repetitions=2",
        "measurement.slo_ttft_s=0.05",
        "energy=none",
        "logger=none",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {(r["method"], r["concurrency"]): r for r in results_in(tmp_path)}
    assert set(results) == {("none", 1), ("none", 3), ("ngram", 1), ("ngram", 3)}
    for (method, concurrency), r in results.items():
        m, s = r["metrics"], r["serving"]
        assert r["status"] == "ok" and r["request_rate"] is None and s["concurrency"] == concurrency
        assert s["speculative"]["requests"] == 6 and s["speculative"]["ttft_s"]["n"] == 6
        assert s["speculative"]["output_throughput"] == pytest.approx(m["tokens_per_s"])
        assert s["speculative"]["goodput_fraction"] is not None and r["environment"]["server_managed"] is False
        if method == "ngram":
            assert m["acceptance_rate"] == 0.5 and m["num_drafts"] == 2 * 3 * 4  # 2 repetitions x 3 prompts x 4 steps
            assert r["lossless"]["checked"] and r["lossless"]["match_rate"] == 1.0
            assert r["baseline"]["source"].startswith("reused") and s["baseline"]["requests"] == 6
            assert m["speedup"] > 1.3  # two tokens per chunk at the same pace
            assert s["acceptance_source"].startswith("the server's Prometheus /metrics")
    html = write([next((tmp_path / "outputs" / "sweeps").iterdir())], tmp_path / "report.html").read_text()
    assert "Speedup vs concurrency" in html and "stops paying: none in the range" in html


def test_a_server_that_refuses_its_first_request_fails_the_start(tmp_path):
    spec = fake_spec(tmp_path, "--child")
    spec.ready_request = ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 999})
    server = ManagedServer(spec)
    with pytest.raises(ServerError, match=r"^fake server refused its first request \(HTTP 400: .*refused by the fake"):
        server.start()
    assert not server.alive() and not group_alive(server)


def test_the_crossover_is_where_the_speedup_first_falls_below_one():
    from specsweep.report.data import crossover

    assert crossover([(1, 1.4), (4, 1.1)])["kind"] == "none"
    assert "none in the range" in crossover([(4, 1.1), (1, 1.4)])["text"]
    cross = crossover([(1, 1.5), (2, 1.2), (8, 0.8), (16, 1.1)])  # the first fall below 1 counts
    assert cross["kind"] == "crosses" and cross["at"] == pytest.approx(2 ** (1 + 0.2 / 0.4 * 2))  # 4.0
    assert crossover([(1, 0.9), (4, 0.7)]) == {
        "kind": "never",
        "at": 1,
        "text": "speculation never paid in the range (speedup 0.90x already at concurrency 1)",
    }
    assert crossover([(1, None)])["kind"] == "no data"
