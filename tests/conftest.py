"""Shared test helpers and fixtures of tests/ and tests/integration/: run main.py as a user would, the tiny real
models the tests build themselves (from tests/fakes.py's factory), reading a W&B run, and the session-end check of
every result.json against the committed schema."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import tiny_qwen2

REPO = Path(__file__).resolve().parents[1]


# Variables a developer's shell may carry that would let a test reach their accounts or caches.
FOREIGN_ENV = (
    "WANDB_API_KEY",
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_DATA_DIR",
    "WANDB_BASE_URL",
    "WANDB_ENTITY",
    "WANDB_PROJECT",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_HOME",
)


def isolated_env(cwd: Path) -> dict:
    """The environment of a `main.py` a test starts: HOME and the W&B and HF state under `cwd`, no tokens; the model
    cache stays the shared one (it is what setup prepared)."""
    from specsweep.models.packaged import cache_root

    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    home = Path(cwd) / ".home"
    env.update(HOME=str(home), HF_HOME=str(home / "hf"), SPECSWEEP_CACHE=str(cache_root()))
    return env


def run_main(*args: str, cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python main.py ARGS` in `cwd` (outputs/ lands there), in an isolated environment (`env` is laid over it)."""
    full_env = {**isolated_env(cwd), **(env or {})}
    return subprocess.run(
        [sys.executable, str(REPO / "main.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def native_config(cfg) -> dict:
    """The selected backend's native config for a composed config, models resolved without preparing them."""
    from specsweep import backends
    from specsweep.models.resolve import resolve_models

    return backends.native_config(cfg, resolve_models(cfg, prepare=False))


def build_engine(cfg, session=None):
    """A loaded engine for a composed config (a fresh session unless one is given)."""
    from specsweep import backends
    from specsweep.models.resolve import resolve_models
    from specsweep.session import Session

    return backends.build_engine(cfg, resolve_models(cfg), session or Session())


def results_in(cwd: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((cwd / "outputs").rglob("result.json"))]


@pytest.fixture(scope="session")
def packaged_tokenizer_dir() -> Path:
    from specsweep.models.packaged import PACKAGED_MODELS, convert

    return convert(PACKAGED_MODELS["qwen2.5-coder-0.5b-instruct"])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, packaged_tokenizer_dir) -> Path:
    """A 2-layer random Qwen2 with the real Qwen tokenizer: every code path in seconds (says nothing about speed)."""
    return tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), packaged_tokenizer_dir)


# vLLM's CPU attention needs head_dim 64 or more (tiny_model_dir's is 16): 128 hidden over 2 heads.
VLLM_TINY_SIZES = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.fixture(scope="session")
def vllm_tiny_dir(tmp_path_factory, packaged_tokenizer_dir) -> Path:
    """A 2-layer random float32 Qwen2 with the real Qwen tokenizer and head_dim 64: the tiny model vLLM can run."""
    return tiny_qwen2(tmp_path_factory.mktemp("vllm-tiny-qwen2"), packaged_tokenizer_dir, **VLLM_TINY_SIZES)


# --- W&B: an offline run's record file, and a HOME without W&B state (tracking tests, fast and e2e alike) ------


def read_records(run_dir: Path) -> dict:
    """Decode `<run_dir>/wandb/offline-run-*/run-*.wandb` (W&B header + LevelDB log framing of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    out: dict = {"config": {}, "summary": {}, "history": [], "run": None, "exit": None, "dir": path.parent}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        which = record.WhichOneof("record_type")
        if which == "run":
            out["run"] = record.run
            out["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif which == "summary":
            out["summary"].update({u.key: json.loads(u.value_json) for u in record.summary.update if u.key})
        elif which == "history":
            out["history"].append(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            )
        elif which == "exit":
            out["exit"] = record.exit
    return out


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """HOME under the test's tmp_path and no W&B variables, in this process (run_main isolates the jobs it starts)."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    return home


# --- every result.json a job wrote during this session is checked against docs/result.schema.json -----------------

SCHEMA_CHECKED: list[Path] = []  # the result.json files the session-end check validated (reported in the summary)


def job_results_under(root: Path) -> list[Path]:
    """Every result.json a main.py job wrote under `root`: Hydra puts job dirs in `<cwd>/outputs/` (what results_in
    reads). Other result.json files under the basetemp are the results store's own unit-test inputs, not results."""
    return sorted(p for p in root.rglob("result.json") if "outputs" in p.relative_to(root).parts)


def whole_lane(config) -> bool:
    """A whole lane as scripts/test.sh runs it (-m "not slow" or -m slow, no test file, node or -k picked): its jobs
    must leave result.json files, or the schema check below would pass having checked nothing."""
    picked = any(a.endswith(".py") or "::" in a for a in config.args) or config.option.keyword
    return bool(config.option.markexpr) and not picked


@pytest.fixture(scope="session", autouse=True)
def result_json_matches_schema(tmp_path_factory, request):
    """At session end: every job result written under the basetemp validates against the committed schema (at
    least one in a whole lane)."""
    yield
    from specsweep.results.schema import SCHEMA_PATH, validation_errors

    schema = json.loads((REPO / SCHEMA_PATH).read_text())
    files = job_results_under(tmp_path_factory.getbasetemp())
    invalid = {p: errs for p in files if (errs := validation_errors(json.loads(p.read_text()), schema))}
    SCHEMA_CHECKED.extend(files)
    if not files and whole_lane(request.config) and not request.session.testsfailed:
        pytest.fail(f"no job result.json under {tmp_path_factory.getbasetemp()}: the schema check checked nothing")
    if invalid:
        lines = [f"{p}:\n    " + "\n    ".join(errs[:10]) for p, errs in invalid.items()]
        pytest.fail(f"{len(invalid)} of {len(files)} result.json files break {SCHEMA_PATH}:\n" + "\n".join(lines))


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"result.json schema check: {len(SCHEMA_CHECKED)} job result(s) validated")
