"""llama.cpp backend (`backends/llamacpp/`): the mapping onto xllamacpp's CommonParams field by field, validation in
one line before anything loads, the GGUF header reader, and the packaged models kept as their verified joined GGUF.
The engine itself runs in tests/integration/test_llamacpp.py."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, native_config, run_main
from specsweep.backends.llamacpp import config as llamacpp_config
from specsweep.backends.llamacpp.mapping import COUNTERS
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import ConfigError, validate
from specsweep.models import packaged
from specsweep.models.resolve import gguf_value, reference_problem
from specsweep.serving.prometheus import counters_from_text

register_configs()

SMALL = packaged.PACKAGED_MODELS["qwen2.5-coder-0.5b-instruct"]
SMALL_GGUF = str(packaged.gguf_path(SMALL))
CORES = llamacpp_config.machine_cores()
T = "COMMON_SPECULATIVE_TYPE_"


def compose_cfg(*overrides: str):
    return compose_config(["backend=llamacpp", "model=qwen2.5-coder-0.5b", *overrides])


def params_of(*overrides: str) -> dict:
    cfg = compose_cfg(*overrides)
    validate(cfg)
    return native_config(cfg)["params"]


def write_gguf(path: Path, metadata: dict) -> Path:
    """A GGUF header with these string/uint32 metadata keys (and a skipped array), no tensors: enough for headers."""

    def string(text: str) -> bytes:
        return struct.pack("<Q", len(text.encode())) + text.encode()

    body = b""
    for key, value in metadata.items():
        encoded = struct.pack("<I", 8) + string(value) if isinstance(value, str) else struct.pack("<II", 4, value)
        body += string(key) + encoded
    body += string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + string("a") + string("b")
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata) + 1) + body)
    return path


# --- the mapping, field by field ------------------------------------------------------------------------------------

COMMON = {
    "model.path": SMALL_GGUF,
    "n_ctx": 4096,
    "n_batch": 2048,
    "n_parallel": 1,
    "n_gpu_layers": -1,
    "cpuparams.n_threads": CORES,
    "cpuparams_batch.n_threads": CORES,
    "cache_prompt": False,
    "cache_ram_mib": 0,
    "endpoint_metrics": True,
    "verbosity": 0,
    "sampling.temp": 0.0,
    "sampling.top_k": 1,
    "sampling.top_p": 1.0,
    "sampling.min_p": 0.0,
    "sampling.seed": 0,
}


def test_none_maps_the_server_and_a_greedy_request():
    cfg = compose_cfg("speculation=none", "generation.max_new_tokens=16")
    validate(cfg)
    native = native_config(cfg)
    assert native["params"] == {**COMMON, "speculative.types": [T + "NONE"]}
    assert native["request"] == {
        "max_tokens": 16,
        "temperature": 0.0,
        "top_k": 1,
        "top_p": 1.0,
        "min_p": 0.0,
        "seed": 0,
        "cache_prompt": False,
    }


def test_draft_model_maps_k_the_draft_gguf_threads_and_overrides():
    params = params_of(
        "speculation=draft_model",
        "speculation.num_speculative_tokens=6",
        "backend.num_threads=3",
        "backend.draft_threads=1",
        "+speculation.backend_overrides.p_min=0.5",
        "+speculation.backend_overrides.n_min=2",
    )
    assert params == {
        **COMMON,
        "cpuparams.n_threads": 3,
        "cpuparams_batch.n_threads": 3,
        "speculative.types": [T + "DRAFT_SIMPLE"],
        "speculative.draft.mparams.path": SMALL_GGUF,
        "speculative.draft.n_max": 6,
        "speculative.draft.n_min": 2,
        "speculative.draft.p_min": 0.5,
        "speculative.draft.cpuparams.n_threads": 1,
        "speculative.draft.cpuparams_batch.n_threads": 1,
        "speculative.draft.n_gpu_layers": -1,
    }


def test_draft_threads_default_to_the_targets_and_p_min_is_always_recorded():
    params = params_of("speculation=draft_model", "backend.num_threads=2")
    assert params["speculative.draft.cpuparams.n_threads"] == 2
    assert params["speculative.draft.p_min"] == 0.0  # llama.cpp's default moved (#26100): never left implicit


@pytest.mark.parametrize(
    "variant,expected",
    [
        ("ngram_simple", {"speculative.ngram_simple.size_n": 3, "speculative.ngram_simple.size_m": 4}),
        ("ngram_map_k", {"speculative.ngram_map_k.size_n": 3, "speculative.ngram_map_k.size_m": 4}),
        ("ngram_map_k4v", {"speculative.ngram_map_k4v.size_n": 3, "speculative.ngram_map_k4v.size_m": 4}),
        (
            "ngram_mod",
            {"speculative.ngram_mod.n_match": 3, "speculative.ngram_mod.n_max": 4, "speculative.ngram_mod.n_min": 0},
        ),
    ],
)
def test_ngram_variants_map_the_window_and_k(variant, expected):
    params = params_of("speculation=ngram", f"backend.ngram_variant={variant}")  # the preset: k=4, window 1..3
    spec = {k: v for k, v in params.items() if k.startswith("speculative.")}
    assert spec == {
        "speculative.types": [T + variant.upper()],
        "speculative.draft.n_max": 4,
        "speculative.draft.n_min": 0,
        **expected,
    }
    assert {k: v for k, v in params.items() if not k.startswith("speculative.")} == COMMON


def test_ngram_cache_and_llama_cpp_defaults_for_a_null_window():
    params = params_of(
        "speculation=ngram",
        "backend.ngram_variant=ngram_cache",
        "speculation.ngram_min=null",
        "speculation.ngram_max=null",
        "+speculation.backend_overrides.lookup_cache_static=/tmp/static.bin",
    )
    assert params["speculative.types"] == [T + "NGRAM_CACHE"]
    assert params["speculative.ngram_cache.lookup_cache_static"] == "/tmp/static.bin"
    assert not any(".size_n" in k or "ngram_mod" in k for k in params)
    simple = params_of(
        "speculation=ngram",
        "speculation.ngram_min=null",
        "speculation.ngram_max=null",
        "speculation.num_speculative_tokens=12",
    )
    assert simple["speculative.ngram_simple.size_n"] == 12  # llama.cpp's own default n-gram


def test_head_methods_map_their_type_and_weights(tmp_path):
    head = str(write_gguf(tmp_path / "head.gguf", {"general.architecture": "eagle3"}))
    params = params_of("speculation=eagle3", f"speculation.draft_model={head}")
    assert params["speculative.types"] == [T + "DRAFT_EAGLE3"]
    assert params["speculative.draft.mparams.path"] == head
    assert params["speculative.draft.n_max"] == 3
    dflash = params_of("speculation=dflash", f"speculation.draft_model={head}")
    assert dflash["speculative.types"] == [T + "DRAFT_DFLASH"]
    assert "speculative.draft.n_max" not in dflash  # k null: llama.cpp clamps its default to the drafter's block


def test_mtp_maps_the_targets_own_layers(tmp_path):
    target = str(
        write_gguf(tmp_path / "glm.gguf", {"general.architecture": "glm4moe", "glm4moe.nextn_predict_layers": 1})
    )
    cfg = compose_cfg("speculation=mtp", f"model.target={target}")
    validate(cfg)
    params = native_config(cfg)["params"]
    assert params["model.path"] == target and params["load_mtp"] is True
    assert params["speculative.types"] == [T + "DRAFT_MTP"] and params["speculative.draft.n_max"] == 1
    assert "speculative.draft.mparams.path" not in params


def test_sampling_switches_off_llama_cpp_extra_samplers():
    native = native_config(
        compose_cfg("speculation=none", "generation.temperature=0.7", "generation.top_p=0.9", "generation.seed=5")
    )
    assert {k: v for k, v in native["params"].items() if k.startswith("sampling.")} == {
        "sampling.temp": 0.7,
        "sampling.top_k": 0,
        "sampling.top_p": 0.9,
        "sampling.min_p": 0.0,
        "sampling.seed": 5,
    }
    assert native["request"]["temperature"] == 0.7 and native["request"]["top_k"] == 0


# --- validation: one line, before anything loads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["speculation=medusa"],
            r"^speculation.method='medusa' is invalid: expected a method backend=llamacpp "
            r"supports: none, draft_model, ngram, eagle3, mtp, dflash$",
        ),  # fmt: skip
        (["generation.batch_size=2"], r"^generation.batch_size=2 is invalid: expected 1 on backend=llamacpp"),
        (["generation.max_new_tokens=256", "backend.n_ctx=128"], r"^backend.n_ctx=128 is invalid: expected more"),
        (["backend.ngram_variant=ngram_big"], r"ngram_variant"),
        (["backend.num_threads=0"], r"^backend.num_threads=0 is invalid: expected an integer >= 1"),
        (
            ["+speculation.backend_overrides.n_maxx=3"],
            r"^speculation.backend_overrides.n_maxx=3 is invalid: expected one of n_min, p_min, p_split for "
            r"method=draft_model on backend=llamacpp$",
        ),
        (
            ["speculation=ngram", "+speculation.backend_overrides.p_min=0.5"],
            r"^speculation.backend_overrides.p_min=0.5 is invalid: expected one of n_min for method=ngram",
        ),
        (
            ["speculation=ngram", "speculation.ngram_min=2"],
            r"^speculation.ngram_min=2 is invalid: expected null, 1 or speculation.ngram_max \(3\) on backend=llamacpp",
        ),
        (
            ["speculation=ngram", "speculation.num_speculative_tokens=2"],
            r"^speculation.num_speculative_tokens=2 is invalid: expected an integer >= 3 \(the n-gram size",
        ),
        (
            ["speculation=ngram", "backend.ngram_variant=ngram_cache"],
            r"^speculation.ngram_min=1 is invalid: expected null with backend.ngram_variant=ngram_cache",
        ),
        (
            ["speculation=mtp"],
            r"^model.target='packaged:qwen2.5-coder-0.5b-instruct' is invalid: expected a target with "
            r"multi-token-prediction layers for method=mtp on backend=llamacpp \(the packaged models",
        ),
        (["speculation=eagle3"], r"^speculation.draft_model=None is invalid: expected a draft for method=eagle3"),
    ],
)
def test_invalid_configs_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(*overrides))


def test_a_model_path_that_is_not_a_gguf_is_refused(tmp_path):
    hf_dir = tmp_path / "hf-model"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    cases = {
        str(hf_dir): "a GGUF file \\(\\*.gguf\\) on this backend, not a directory$",
        str(tmp_path / "model.safetensors"): "a GGUF file .* \\(this path does not end in .gguf\\)$",
        str(tmp_path / "absent.gguf"): "a GGUF file .* \\(this path does not exist\\)$",
        str(not_gguf): "a GGUF file .* \\(this file does not start with the GGUF magic bytes\\)$",
    }
    for path, why in cases.items():
        with pytest.raises(ConfigError, match=f"^model.target='{path}' is invalid: expected {why}"):
            validate(compose_cfg("speculation=none", f"model.target={path}"))
    draft = f"speculation.draft_model={hf_dir}"
    with pytest.raises(ConfigError, match="^speculation.draft_model=.* is invalid: expected a GGUF file"):
        validate(compose_cfg("speculation=draft_model", draft))
    # The same directory is what the PyTorch backend takes: the format is the backend's.
    assert reference_problem(str(hf_dir)) is None


def test_missing_xllamacpp_fails_validation_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(llamacpp_config, "installed", lambda: False)
    with pytest.raises(
        ConfigError,
        match=r"^backend='llamacpp' is invalid: expected an installed xllamacpp .*: pip install xllamacpp==2026\.10\.",
    ):
        validate(compose_cfg())
    cfg = compose_cfg()
    cfg.dry_run = True  # the mapping is shown without the engine
    validate(cfg)


def test_dry_run_prints_the_native_config(tmp_path):
    proc = run_main("backend=llamacpp", "speculation=ngram", "--dry-run", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert printed["backend"] == "llamacpp" and printed["method"] == "ngram"
    params = printed["native_config"]["params"]
    assert params["speculative.types"] == [T + "NGRAM_SIMPLE"]
    assert params["model.path"] == str(packaged.gguf_path(packaged.PACKAGED_MODELS["qwen2.5-coder-1.5b-instruct"]))
    assert not (tmp_path / "outputs").exists()


def test_support_matrix_and_help_list_llamacpp(tmp_path):
    from specsweep.backends import support_matrix
    from specsweep.config.help import help_text

    assert support_matrix()["llamacpp"] == ("none", "draft_model", "ngram", "eagle3", "mtp", "dflash")
    assert "llamacpp" in help_text(REPO / "conf").split("backend:")[1].splitlines()[0]


# --- counters and GGUF headers ----------------------------------------------------------------------------------------


def test_counters_read_from_llama_cpp_metrics_text():
    text = "\n".join(
        [
            "# TYPE llamacpp:spec_decode_num_draft_tokens_total counter",
            "llamacpp:spec_decode_num_draft_tokens_total 120",
            "# TYPE llamacpp:spec_decode_num_accepted_tokens_total counter",
            "llamacpp:spec_decode_num_accepted_tokens_total 108",
            "# TYPE llamacpp:spec_decode_num_drafts_total counter",
            "llamacpp:spec_decode_num_drafts_total 31",
            "# TYPE llamacpp:predicted_tokens_seconds gauge",
            "llamacpp:predicted_tokens_seconds 3.7",
            "# TYPE llamacpp:spec_decode_num_accepted_tokens_per_pos_total counter",
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 31',
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="1"} 27',
            'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="3"} 23',
        ]
    )
    counts = counters_from_text(text + "\n", COUNTERS)
    assert (counts.drafted, counts.accepted, counts.num_drafts) == (120, 108, 31)
    assert counts.accepted_per_position == [31, 27, 0, 23]


def test_gguf_header_values_are_read_without_loading(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", {"general.architecture": "qwen2", "qwen2.block_count": 24})
    assert gguf_value(str(path), "general.architecture") == "qwen2"
    assert gguf_value(str(path), ".block_count") == 24
    assert gguf_value(str(path), ".nextn_predict_layers") is None
    other = tmp_path / "other.gguf"
    other.write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not a GGUF"):
        gguf_value(str(other), "general.architecture")


# --- the packaged models as GGUF: joined once, verified, kept, never converted --------------------------------------


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A packaged model of two pinned fake wheels in an empty cache (never installed: nothing on sys.path)."""
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    wheels = packaged.wheels_dir()
    wheels.mkdir(parents=True)
    payload = [b"GGUF" + b"a" * 1000, b"b" * 500]
    pins = []
    for n, data in enumerate(payload, 1):
        pkg, info = f"fakegguf_part{n}", f"fakegguf_part{n}-1.0.dist-info"
        path = wheels / f"{pkg}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{pkg}/data/part{n:02d}.bin", data)
            for name in ("METADATA", "WHEEL", "top_level.txt", "RECORD"):
                zf.writestr(f"{info}/{name}", "")
        pins.append(hashlib.sha256(path.read_bytes()).hexdigest())
    joined = b"".join(payload)
    sha = hashlib.sha256(joined).hexdigest()
    model = packaged.PackagedModel("fake", "fakegguf_part", 2, "1.0", len(joined), sha, tuple(pins))
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "fake", model)
    return model


def test_a_packaged_model_resolves_to_its_verified_joined_gguf_for_llamacpp(fake_model):
    assert packaged.gguf_state(fake_model)[0] == packaged.ABSENT
    assert reference_problem("packaged:fake", "gguf") is None  # the wheels are there: joined on first use
    path, what = packaged.ensure_gguf(fake_model)
    assert (path, what) == (packaged.gguf_path(fake_model), "joined")
    assert path.read_bytes().startswith(b"GGUF") and path.stat().st_size == fake_model.gguf_size
    assert packaged.ensure_gguf(fake_model)[1] == "cached"
    assert not packaged.converted_dir(fake_model).exists()  # no conversion for a GGUF backend
    assert not list(path.parent.glob("*.partial"))


def test_a_corrupt_kept_gguf_is_refused_in_one_line_and_setup_joins_it_again(fake_model):
    path, _ = packaged.ensure_gguf(fake_model)
    path.write_bytes(path.read_bytes()[:-1] + b"X")  # same size, other bytes: only the sha256 can tell
    packaged._VERIFIED.clear()  # a new process
    with pytest.raises(
        packaged.PackagedModelError, match=r"the joined GGUF is corrupt: .* has sha256 [0-9a-f]{64}, expected"
    ):
        packaged.ensure_gguf(fake_model)
    assert packaged.ensure_gguf(fake_model, repair=True)[1].startswith("rejoined: ")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake_model.gguf_sha256
    path.write_bytes(b"GGUF")  # truncated: caught by its size, before anything hashes it
    assert "truncated" in reference_problem("packaged:fake", "gguf")


# --- the engine's counting, on a stand-in for xllamacpp.Server -----------------------------------------------------


class FakeServer:
    """Streams one answer per request and moves its /metrics counters by `counted` while it does; the response's
    timings report `reported` (drafted, accepted)."""

    def __init__(self, counted: tuple, reported: tuple, error: str = ""):
        self.counted, self.reported, self.error = counted, reported, error
        self.totals = [0, 0, 0, [0, 0]]  # drafted, accepted, drafts, per position

    def handle_metrics(self) -> str:
        """The counters as llama.cpp prints them (each family with its TYPE line)."""
        drafted, accepted, drafts, per_pos = self.totals
        lines = []
        for name, value in (("num_draft_tokens", drafted), ("num_accepted_tokens", accepted), ("num_drafts", drafts)):
            lines += [f"# TYPE llamacpp:spec_decode_{name}_total counter", f"llamacpp:spec_decode_{name}_total {value}"]
        lines.append("# TYPE llamacpp:spec_decode_num_accepted_tokens_per_pos_total counter")
        for i, n in enumerate(per_pos):
            lines.append(f'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{{position="{i}"}} {n}')
        return "\n".join(lines) + "\n"

    def handle_chat_completions(self, body: dict, callback) -> None:
        assert body["stream"] is True and body["messages"][0]["role"] == "user"
        if self.error:
            callback({"error": {"code": 400, "message": self.error}})
            return
        callback({"choices": [{"delta": {"role": "assistant", "content": None}}]})
        for piece in ("Hello", " world"):
            callback({"choices": [{"delta": {"content": piece}}]})
        drafted, accepted, drafts, per_pos = self.counted
        self.totals = [self.totals[0] + drafted, self.totals[1] + accepted, self.totals[2] + drafts,
                       [a + b for a, b in zip(self.totals[3], per_pos)]]  # fmt: skip
        timings = {"draft_n": self.reported[0], "draft_n_accepted": self.reported[1]}
        callback({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}, "timings": timings})


class FakeTokenizer:
    def post(self, path: str, json: dict):
        assert path == "/tokenize" and json["content"] == "Hello world"
        return self

    def raise_for_status(self):
        return self

    def json(self) -> dict:
        return {"tokens": [9707, 1879]}


def fake_engine(server: FakeServer):
    from specsweep.backends.llamacpp.backend import LlamacppBackend
    from specsweep.models.resolve import resolve_models
    from specsweep.session import Session

    # null: this process may hold torch's OpenMP already, which a configured wait policy would refuse (tested below)
    cfg = compose_cfg("speculation=draft_model", "speculation.num_speculative_tokens=2", "backend.omp_wait_policy=null")
    engine = LlamacppBackend(cfg, native_config(cfg), resolve_models(cfg, prepare=False), Session())
    engine.server, engine.http = server, FakeTokenizer()
    return engine


def test_each_generation_counts_the_servers_counters_around_its_request():
    from specsweep.core import Prompt

    engine = fake_engine(FakeServer(counted=(5, 3, 3, [2, 1]), reported=(5, 3)))
    first, second = engine.generate([Prompt("a", "code", "hi"), Prompt("b", "code", "ho")])
    for gen in (first, second):  # the second request's counts are its own, not the running totals
        counts = gen.acceptance
        assert (counts.drafted, counts.accepted, counts.num_drafts, counts.accepted_per_position) == (5, 3, 3, [2, 1])
        assert (gen.text, gen.output_ids, gen.token_count, gen.prompt_tokens) == ("Hello world", [9707, 1879], 2, 9)
        assert 0 < gen.ttft_s <= gen.wall_s


def test_counters_that_disagree_with_the_timings_or_an_error_fail_the_generation():
    from specsweep.backends.llamacpp.backend import CountMismatch
    from specsweep.core import Prompt

    engine = fake_engine(FakeServer(counted=(5, 3, 3, [2, 1]), reported=(5, 4)))
    with pytest.raises(
        CountMismatch, match="/metrics counted 5 drafted and 3 accepted tokens, the response's timings 5 and 4"
    ):
        engine.generate([Prompt("a", "code", "hi")])
    engine = fake_engine(FakeServer(counted=(0, 0, 0, [0, 0]), reported=(0, 0), error="the prompt is too long"))
    with pytest.raises(RuntimeError, match="^llama.cpp refused the request: the prompt is too long$"):
        engine.generate([Prompt("a", "code", "hi")])


# --- OpenMP's wait policy: set for the engine's load only, and what decides the pairing -------------------------------


def test_the_wait_policy_is_the_engines_environment_and_decides_the_pairing(monkeypatch):
    from specsweep.measure.baseline import pairing

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    cfg = compose_cfg()
    validate(cfg)
    assert native_config(cfg)["env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert pairing(cfg)[0] == "interleaved"
    active = compose_cfg("backend.omp_wait_policy=active")
    assert native_config(active)["env"] == {"OMP_WAIT_POLICY": "ACTIVE"}
    mode, why = pairing(active)
    assert mode == "phased" and "threads spin before they sleep" in why
    inherited = compose_cfg("backend.omp_wait_policy=null")
    assert native_config(inherited)["env"] == {} and pairing(inherited)[0] == "phased"  # unset: it spins, then sleeps
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert pairing(inherited)[0] == "interleaved"
    with pytest.raises(
        ConfigError, match=r"^measurement.pairing='interleaved' is invalid: expected auto or phased on backend=llamacpp"
    ):
        validate(compose_cfg("backend.omp_wait_policy=active", "measurement.pairing=interleaved"))


LOAD = """
import sys
from specsweep.backends.llamacpp.backend import load_xllamacpp, openmp_settings
if sys.argv[1] == "torch-first":
    import torch  # loads its libgomp.so.1, the soname xllamacpp links: OpenMP has read OMP_WAIT_POLICY (unset)
if sys.argv[1] == "zeus-first":
    import zeus.monitor  # loads scikit-learn's own libgomp (another soname): not the one llama.cpp runs on
try:
    load_xllamacpp({"OMP_WAIT_POLICY": "PASSIVE"})
except RuntimeError as err:
    print("refused:", err)
import os
print("after:", os.environ.get("OMP_WAIT_POLICY"), openmp_settings())
"""


@pytest.mark.skipif(not llamacpp_config.installed(), reason="xllamacpp is not installed")
@pytest.mark.parametrize("first, refused", [("fresh", False), ("zeus-first", False), ("torch-first", True)])
def test_openmp_runs_with_the_engines_wait_policy_or_the_job_is_refused(tmp_path, first, refused):
    """A real second process each. OMP_DISPLAY_ENV makes libgomp print what it read when loaded: its spin count is 0
    when passive, 300000 when unset (its OMP_WAIT_POLICY line says PASSIVE for both)."""
    import subprocess
    import sys

    env = {"OMP_DISPLAY_ENV": "VERBOSE", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", LOAD, first], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    if refused:
        assert "GOMP_SPINCOUNT = '300000'" in proc.stderr and "GOMP_SPINCOUNT = '0'" not in proc.stderr
        assert (
            "refused: llama.cpp's OpenMP in this process already runs with what it read before llama.cpp loaded, not"
            in proc.stdout
        )
    else:
        assert "GOMP_SPINCOUNT = '0'" in proc.stderr, proc.stderr[-2000:]
        assert "refused" not in proc.stdout
        # the process's own environment is as it was, and OpenMP says it sleeps at once
        assert "after: None {'OMP_WAIT_POLICY': 'PASSIVE', 'GOMP_SPINCOUNT': '0'}" in proc.stdout
