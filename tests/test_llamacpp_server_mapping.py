"""backend=llamacpp_server (`backends/llamacpp/server_*.py`, `serve.py`): the server command line and the request,
field by field (the offline CommonParams mapping plus one slot per request in flight), validation in one line before
anything starts, and --dry-run through main.py. The real server runs in tests/integration/test_llamacpp_server.py."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import native_config, run_main
from specsweep.backends.llamacpp import config as llamacpp_config
from specsweep.backends.llamacpp import serve
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import ConfigError, validate
from specsweep.models import packaged
from specsweep.serving.server import PORT

register_configs()

SMALL_GGUF = str(packaged.gguf_path(packaged.PACKAGED_MODELS["qwen2.5-coder-0.5b-instruct"]))
T = "COMMON_SPECULATIVE_TYPE_"


def compose_cfg(*overrides: str, backend: str = "llamacpp_server"):
    return compose_config([f"backend={backend}", "model=qwen2.5-coder-0.5b", *overrides])


def native_of(*overrides: str, backend: str = "llamacpp_server") -> dict:
    cfg = compose_cfg(*overrides, backend=backend)
    validate(cfg)
    return native_config(cfg)


def test_the_server_is_the_offline_mapping_with_one_slot_per_request_in_flight():
    for method in ("none", "ngram", "draft_model"):
        load = ["generation.concurrency=4", "backend.n_ctx=1024"]
        served = native_of(f"speculation={method}", *load)
        offline = native_of(f"speculation={method}", "backend.n_ctx=1024", backend="llamacpp")
        expected = {**offline["params"], "n_parallel": 4, "n_ctx": 4 * 1024, "kv_unified": False}
        assert served["params"] == expected, method
        assert served["request"] == offline["request"]  # greedy as top_k=1, cache_prompt=false, max_tokens
        assert served["endpoint"] == "/v1/chat/completions" and served["url"] is None
        assert served["load"] == {"concurrency": 4, "request_rate": None}


def test_the_command_line_runs_the_serve_module_with_the_params_as_json():
    native = native_of(
        "speculation=draft_model", "generation.concurrency=2", "backend.extra_args=['--flash_attn_type=1']"
    )
    command = native["server_command"]
    assert command[:3] == [sys.executable, "-m", "specsweep.backends.llamacpp.serve"]
    assert command[3:7] == ["--host", "127.0.0.1", "--port", PORT]
    assert command[7] == "--params" and json.loads(command[8]) == native["params"]
    assert command[9:] == ["--flash_attn_type=1"]  # extra_args last, set after the mapping's fields
    params = native["params"]
    assert (
        params["speculative.types"] == [T + "DRAFT_SIMPLE"] and params["speculative.draft.mparams.path"] == SMALL_GGUF
    )
    assert params["model.path"] == SMALL_GGUF and params["n_parallel"] == 2
    assert native["server_command_line"].startswith(f"{sys.executable} -m specsweep.backends.llamacpp.serve --host")


def test_threads_default_to_the_machines_cores_and_follow_num_threads():
    cores = llamacpp_config.machine_cores()
    assert native_of("speculation=none")["params"]["cpuparams.n_threads"] == cores
    params = native_of("speculation=ngram", "backend.num_threads=1")["params"]
    assert params["cpuparams.n_threads"] == params["cpuparams_batch.n_threads"] == 1


def test_an_external_server_is_measured_without_a_command():
    url = ["backend.url=http://host:8080", "backend.baseline_url=http://host:8081"]
    speculative = native_of("speculation=ngram", *url)
    assert speculative["server_command"] is None and speculative["params"] is None
    assert speculative["url"] == "http://host:8080"
    assert speculative["server_command_line"] == "(none: the server at http://host:8080 is measured)"
    assert native_of("speculation=none", *url)["url"] == "http://host:8081"


def test_serve_reads_extra_fields_as_json_where_they_parse():
    args, extra = serve.parse(
        ["--params", "{}", "--port", "5", "--n_ubatch=64", "--flash_attn_type", "on", "--x.y=[1]"]
    )
    assert args.port == 5 and args.host == "127.0.0.1"
    assert extra == {"n_ubatch": 64, "flash_attn_type": "on", "x.y": [1]}
    with pytest.raises(SystemExit):
        serve.parse(["--params", "{}", "--port", "5", "stray"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["generation.batch_size=2"], r"^generation.batch_size=2 is invalid: expected 1 on backend=llamacpp_server"),
        (["backend.extra_args=['--n_parallel=8']"], r"^backend.extra_args='--n_parallel=8' is invalid: expected no "
         r"--n_parallel: use generation.concurrency"),
        (["backend.extra_args=[--port,9]"], r"^backend.extra_args='--port' is invalid: expected no --port"),
        (["backend.extra_args=['--speculative.draft.n_max=3']"], r"^backend.extra_args='--speculative.draft.n_max=3' "
         r"is invalid: expected no --speculative.\*: use speculation"),
        (["backend.extra_args=['--sampling.temp=1']"], r"expected no --sampling.\*: use generation"),
        (["generation.max_new_tokens=256", "backend.n_ctx=128"], r"^backend.n_ctx=128 is invalid: expected more"),
        (["backend.url=localhost:8080"], r"^backend.url='localhost:8080' is invalid: expected an http:// or https://"),
        (["speculation=ngram", "backend.url=http://h:1"], r"^backend.baseline_url=None is invalid: expected the URL"),
        (["speculation=ngram", "speculation.ngram_min=2"], r"^speculation.ngram_min=2 is invalid: expected null, 1 or "
         r"speculation.ngram_max \(3\) on backend=llamacpp_server"),
        (["+speculation.backend_overrides.n_maxx=3"], r"expected one of n_min, p_min, p_split for method=draft_model "
         r"on backend=llamacpp_server$"),
        (["speculation=mtp"], r"^model.target='packaged:qwen2.5-coder-0.5b-instruct' is invalid: expected a target "
         r"with multi-token-prediction layers"),
    ],
)  # fmt: skip
def test_invalid_configs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as raised:
        validate(compose_cfg(*overrides))
    assert "\n" not in str(raised.value)


def test_missing_xllamacpp_fails_validation_unless_a_server_is_given(monkeypatch):
    monkeypatch.setattr(llamacpp_config, "installed", lambda: False)
    with pytest.raises(ConfigError, match=r"^backend='llamacpp_server' is invalid: expected an installed xllamacpp"):
        validate(compose_cfg())
    validate(compose_cfg("speculation=none", "backend.url=http://host:8080"))  # an existing llama-server


def test_the_load_identifies_the_job():
    cfg = compose_cfg("generation.concurrency=3", "generation.request_rate=2.0")
    assert cfg.backend.load_identity(cfg.generation) == {"concurrency": 3, "request_rate": 2.0}
    assert type(cfg.backend).kept_baselines > 1  # one baseline per load level in a sweep
    assert type(cfg.backend).weights_format == "gguf"


def test_a_bad_model_path_is_refused_in_one_line_before_anything_starts(tmp_path):
    absent = tmp_path / "absent.gguf"
    proc = run_main("backend=llamacpp_server", f"model.target={absent}", "speculation=none", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"specsweep: config error: model.target='{absent}' is invalid: expected a GGUF file (*.gguf) on this backend "
        "(this path does not exist)"
    ]
    assert not (tmp_path / "outputs").exists()


def test_dry_run_prints_the_command_and_starts_nothing(tmp_path):
    proc = run_main(
        "backend=llamacpp_server",
        "speculation=ngram",
        "generation.concurrency=8",
        "--dry-run",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert printed["backend"] == "llamacpp_server" and printed["method"] == "ngram"
    native = printed["native_config"]
    assert native["params"]["n_parallel"] == 8 and native["params"]["speculative.types"] == [T + "NGRAM_SIMPLE"]
    assert "-m specsweep.backends.llamacpp.serve" in native["server_command_line"]
    assert not (tmp_path / "outputs").exists()


def test_the_servers_threads_get_the_configured_wait_policy_and_the_pairing_stays_phased(monkeypatch):
    from specsweep.backends.llamacpp.server_backend import server_env
    from specsweep.measure.baseline import pairing

    monkeypatch.setenv("OMP_WAIT_POLICY", "active")  # inherited, and overridden by the setting
    native = native_of("speculation=ngram")
    assert native["env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert server_env(native["env"])["OMP_WAIT_POLICY"] == "PASSIVE"
    assert (
        server_env(native_of("speculation=ngram", "backend.omp_wait_policy=null")["env"])["OMP_WAIT_POLICY"] == "active"
    )
    external = native_of(
        "speculation=ngram", "backend.url=http://127.0.0.1:9", "backend.baseline_url=http://127.0.0.1:8"
    )
    assert external["env"] is None  # not ours to start
    mode, why = pairing(compose_cfg("speculation=ngram"))  # passive threads or not: one server at a time
    assert mode == "phased" and "one llama.cpp server at a time" in why
