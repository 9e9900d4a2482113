"""The real vLLM engine on tiny models these tests make: lossless greedy output, vLLM's counters, engine processes.

vLLM's CPU attention needs head_dim 64 or more, so these tests run on `vllm_tiny_dir` (conftest.py; the shared
`tiny_model_dir` has head_dim 16) and build random EAGLE / EAGLE-3 heads for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import VLLM_TINY_SIZES, build_engine, results_in, run_main
from specsweep.config.compose import compose_config
from specsweep.config.register import register_configs
from specsweep.config.validate import validate
from specsweep.datasets import load_prompts
from specsweep.session import Session

pytestmark = pytest.mark.slow
register_configs()

HIDDEN, INTERMEDIATE = VLLM_TINY_SIZES["hidden_size"], VLLM_TINY_SIZES["intermediate_size"]  # the heads fit the target
HEADS, KV_HEADS = VLLM_TINY_SIZES["num_attention_heads"], VLLM_TINY_SIZES["num_key_value_heads"]


def _write_head(out: Path, architecture: str, vocab: int, shapes: dict, extra_config: dict) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    tensors = {
        name: (torch.ones(shape) if name.endswith("norm.weight") else torch.randn(shape) * 0.02)
        for name, shape in shapes.items()
    }
    save_file(tensors, str(out / "model.safetensors"))
    config = {
        "architectures": [architecture],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "torch_dtype": "float32",
        "tie_word_embeddings": False,
        **extra_config,
    }
    (out / "config.json").write_text(json.dumps(config))
    return out


def _layer(prefix: str, qkv_in: int) -> dict:
    hd = HIDDEN // HEADS
    return {
        f"{prefix}.self_attn.q_proj.weight": (HEADS * hd, qkv_in),
        f"{prefix}.self_attn.k_proj.weight": (KV_HEADS * hd, qkv_in),
        f"{prefix}.self_attn.v_proj.weight": (KV_HEADS * hd, qkv_in),
        f"{prefix}.self_attn.o_proj.weight": (HIDDEN, HEADS * hd),
        f"{prefix}.mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
        f"{prefix}.mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
        f"{prefix}.mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
        f"{prefix}.post_attention_layernorm.weight": (HIDDEN,),
    }


@pytest.fixture(scope="session")
def eagle_head_dir(tmp_path_factory, vllm_tiny_dir) -> Path:
    """EAGLE-1 head: fc(embedding ++ target hidden) -> one Llama layer without its input norm."""
    vocab = json.loads((vllm_tiny_dir / "config.json").read_text())["vocab_size"]
    shapes = {"embed_tokens.weight": (vocab, HIDDEN), "fc.weight": (HIDDEN, 2 * HIDDEN), **_layer("layers.0", HIDDEN)}
    return _write_head(tmp_path_factory.mktemp("eagle-head"), "EagleLlamaForCausalLM", vocab, shapes, {})


@pytest.fixture(scope="session")
def eagle3_head_dir(tmp_path_factory, vllm_tiny_dir) -> Path:
    """EAGLE-3 head fed by both target layers (a 2-layer target needs the aux layer ids spelled out)."""
    vocab = json.loads((vllm_tiny_dir / "config.json").read_text())["vocab_size"]
    aux = [0, 1]
    shapes = {
        "embed_tokens.weight": (vocab, HIDDEN),
        "fc.weight": (HIDDEN, len(aux) * HIDDEN),
        "norm.weight": (HIDDEN,),
        "lm_head.weight": (vocab, HIDDEN),
        "layers.0.input_layernorm.weight": (HIDDEN,),
        "layers.0.hidden_norm.weight": (HIDDEN,),
        **_layer("layers.0", 2 * HIDDEN),
    }
    extra = {"eagle_aux_hidden_state_layer_ids": aux, "eagle_config": {"eagle_aux_hidden_state_layer_ids": aux}}
    return _write_head(tmp_path_factory.mktemp("eagle3-head"), "Eagle3LlamaForCausalLM", vocab, shapes, extra)


def tiny_overrides(model_dir: Path) -> list[str]:
    return [
        "backend=vllm",
        "model=qwen2.5-coder-0.5b",
        f"model.target={model_dir}",
        f"model.draft={model_dir}",
        "backend.dtype=float32",
        "backend.max_model_len=1024",
        "backend.kv_cache_gib=0.25",
        "dataset.num_prompts=3",
        "generation.max_new_tokens=12",
    ]


def composed(model_dir: Path, *overrides: str):
    cfg = compose_config([*tiny_overrides(model_dir), *overrides])
    validate(cfg)
    return cfg


def assert_consistent(counts, k: int) -> None:
    assert counts.num_drafts > 0 and 0 <= counts.accepted <= counts.drafted <= counts.num_drafts * k
    per_pos = counts.accepted_per_position
    assert len(per_pos) == k and sum(per_pos) == counts.accepted
    assert all(a >= b for a, b in zip(per_pos, per_pos[1:])) and per_pos[0] <= counts.num_drafts


@pytest.fixture(scope="module")
def session():
    """One process's session, as main.py keeps it across a sweep; closing it stops the kept engine process."""
    kept = Session()
    yield kept
    kept.close()


def run_batch(cfg, session):
    """Build, generate every prompt in one batch, close; returns (generations, engine)."""
    engine = build_engine(cfg, session)
    try:
        return engine.generate(load_prompts(cfg.dataset)), engine
    finally:
        engine.close()


@pytest.fixture(scope="module")
def baseline(vllm_tiny_dir, session):
    gens, engine = run_batch(composed(vllm_tiny_dir, "speculation=none"), session)
    assert all(g.acceptance is None for g in gens)
    return {g.prompt_id: g.output_ids for g in gens}, engine.worker_pid


def test_same_config_reuses_the_engine_process_and_ngram_gets_a_fresh_one(vllm_tiny_dir, baseline, session):
    base_ids, base_pid = baseline
    gens, engine = run_batch(composed(vllm_tiny_dir, "speculation=none"), session)
    assert engine.reused and engine.worker_pid == base_pid
    assert {g.prompt_id: g.output_ids for g in gens} == base_ids

    import psutil

    gens, engine = run_batch(
        composed(vllm_tiny_dir, "speculation=ngram", "speculation.num_speculative_tokens=3"), session
    )
    assert not engine.reused and engine.worker_pid != base_pid and not psutil.pid_exists(base_pid)
    assert {g.prompt_id: g.output_ids for g in gens} == base_ids
    for g in gens:
        assert g.ttft_s is not None and 0 < g.ttft_s <= g.wall_s
    total = gens[0].acceptance + gens[1].acceptance + gens[2].acceptance
    assert_consistent(total, k=3)


def test_a_k_schedule_drafts_by_batch_size_as_the_engine_reads_it(vllm_tiny_dir, baseline, session):
    """One batch of 3 prompts runs at batch sizes 1..3 only: a schedule off below 4 drafts nothing, one at k=3 below
    4 drafts; both stay the baseline's greedy outputs."""
    drafted = {}
    for schedule in ("{1:0,4:3}", "{1:3,4:0}"):
        cfg = composed(
            vllm_tiny_dir,
            "speculation=ngram",
            "speculation.num_speculative_tokens=3",
            f"+speculation.k_schedule={schedule}",
        )
        gens, engine = run_batch(cfg, session)
        assert engine.native["speculative_config"]["num_speculative_tokens_per_batch_size"][0][:2] == [1, 3]
        assert {g.prompt_id: g.output_ids for g in gens} == baseline[0]
        drafted[schedule] = sum(g.acceptance.drafted if g.acceptance else 0 for g in gens)
    assert drafted["{1:0,4:3}"] == 0 and drafted["{1:3,4:0}"] > 0


@pytest.mark.parametrize("method,head", [("eagle", "eagle_head_dir"), ("eagle3", "eagle3_head_dir")])
def test_eagle_heads_build_run_and_stay_lossless(vllm_tiny_dir, baseline, method, head, request, session):
    head_dir = request.getfixturevalue(head)
    cfg = composed(
        vllm_tiny_dir,
        f"speculation={method}",
        f"speculation.draft_model={head_dir}",
        "speculation.num_speculative_tokens=2",
    )
    gens, engine = run_batch(cfg, session)
    assert {g.prompt_id: g.output_ids for g in gens} == baseline[0]
    total = gens[0].acceptance + gens[1].acceptance + gens[2].acceptance
    assert total.drafted > 0 and total.accepted <= total.drafted
    assert all(a >= b for a, b in zip(total.accepted_per_position, total.accepted_per_position[1:]))
    for g in gens:  # output = the prefill's token + per verification step (accepted + 1), the last step maybe cut
        steps, accepted = g.acceptance.num_drafts, g.acceptance.accepted
        assert accepted + steps + 1 - 2 <= len(g.output_ids) <= accepted + steps + 1, (g.prompt_id, g.acceptance)


def test_multirun_none_ngram_draft_model_writes_vllm_counters(tmp_path, vllm_tiny_dir):
    proc = run_main(
        "-m",
        "speculation=none,ngram,draft_model",
        *tiny_overrides(vllm_tiny_dir),
        "generation.batch_size=2",
        "measurement.repetitions=1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["method"]: r for r in results_in(tmp_path)}
    assert set(results) == {"none", "ngram", "draft_model"} and all(r["status"] == "ok" for r in results.values())
    assert results["none"]["metrics"]["drafted_tokens"] is None
    for method in ("ngram", "draft_model"):
        r = results[method]
        m = r["metrics"]
        assert r["environment"]["engine"] == "vllm" and r["environment"]["vllm"]
        assert r["config"]["generation"]["batch_size"] == 2
        assert r["lossless"]["checked"] and r["lossless"]["match_rate"] == 1.0
        assert 0 < m["accepted_tokens"] <= m["drafted_tokens"] and m["num_drafts"] > 0
        rates = m["acceptance_per_position"]
        assert len(rates) == r["k"] and all(a >= b for a, b in zip(rates, rates[1:]))
        assert m["tokens_per_s"] > 0 and m["baseline_tokens_per_s"] > 0 and m["ttft_s"] > 0
    assert results["draft_model"]["metrics"]["acceptance_rate"] == 1.0  # the target drafting for itself
    # the `none` job's measurement is the baseline of the later jobs: measured once per sweep
    assert all(results[m]["baseline"]["source"].startswith("reused") for m in ("ngram", "draft_model"))
    assert results["ngram"]["metrics"]["baseline_tokens_per_s"] == results["none"]["metrics"]["tokens_per_s"]


def test_float32_on_the_packaged_pair_is_lossless_for_ngram_and_a_draft_model(tmp_path):
    """The packaged Qwen2.5-Coder 1.5B target with its 0.5B draft (real weights, not the tiny model), float32, every
    default prompt: prompt lookup's and the draft model's greedy outputs equal the baseline's token for token. bf16
    may legitimately diverge (batched verification is not bit-exact), float32 may not; and the result names every
    field where the two engines' configs differ, so nothing besides speculation can explain a mismatch."""
    proc = run_main(
        "-m",
        "backend=vllm",
        "speculation=ngram,draft_model",
        "backend.dtype=float32",
        "generation.max_new_tokens=32",
        "measurement.repetitions=1",
        "energy=none",
        "logger=none",
        cwd=tmp_path,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["method"]: r for r in results_in(tmp_path)}
    assert set(results) == {"ngram", "draft_model"}
    for method, r in results.items():
        assert r["status"] == "ok" and r["model"] == "qwen2.5-coder-1.5b", method
        assert r["config"]["backend"]["dtype"] == "float32"
        assert r["metrics"]["accepted_tokens"] > 0, method  # speculation ran and some drafts were kept
        lossless = r["lossless"]
        assert (lossless["checked"], lossless["prompts"], lossless["mismatches"]) == (True, 7, []), (method, lossless)
        assert lossless["match_rate"] == 1.0 and lossless["note"] is None
        differences = r["baseline"]["native_differences"]
        assert set(differences) == {"speculative_config", "llm_kwargs.per_request_spec_decode_metrics"}, differences


def _engine_processes(marker: str) -> list:
    """Live processes (zombies included) whose environment carries this test's marker."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("SPECSWEEP_TEST_MARK") == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_a_hung_engine_times_out_and_its_process_group_is_stopped(vllm_tiny_dir, monkeypatch):
    import os
    import signal

    import psutil

    from specsweep.backends.vllm.backend import VllmWorkerError

    monkeypatch.setenv("SPECSWEEP_TEST_MARK", "hung-engine")
    cfg = composed(vllm_tiny_dir, "speculation=none", "backend.reply_timeout_s=5")
    session = Session()
    engine = build_engine(cfg, session)
    assert engine.worker.timeout_s == 5
    pid = engine.worker_pid
    os.kill(pid, signal.SIGSTOP)  # the real fault: the engine process stops answering
    try:
        with pytest.raises(VllmWorkerError, match=r"did not answer generate within 5 s \(backend.reply_timeout_s\)"):
            engine.generate(load_prompts(cfg.dataset))
    finally:
        engine.close()
        session.close()
    assert not psutil.pid_exists(pid) and not _engine_processes("hung-engine")  # killed and reaped: no zombie


def test_a_job_whose_engine_raises_mid_generation_leaves_no_process(tmp_path, vllm_tiny_dir):
    prompts = tmp_path / "prompts.jsonl"
    too_long = " ".join(["word"] * 3000)  # longer than backend.max_model_len=1024: vLLM raises inside generate
    prompts.write_text(
        json.dumps({"id": "ok", "prompt": "Say hi."}) + "\n" + json.dumps({"id": "long", "prompt": too_long}) + "\n"
    )
    overrides = [o for o in tiny_overrides(vllm_tiny_dir) if not o.startswith("dataset.")]
    proc = run_main(
        *overrides,
        "speculation=ngram",
        "dataset=jsonl",
        f"dataset.path={prompts}",
        "generation.batch_size=2",
        "logger=none",
        "energy=none",
        cwd=tmp_path,
        env={"SPECSWEEP_TEST_MARK": str(tmp_path)},
    )
    assert proc.returncode != 0
    (result,) = results_in(tmp_path)
    assert result["status"] == "failed" and "vLLM failed to generate" in result["error"]
    assert not _engine_processes(str(tmp_path))  # the engine process was stopped and waited for


def test_best_k_for_prompt_lookup_on_vllm_times_target_forwards_for_its_curve(tmp_path, vllm_tiny_dir):
    args = ["hydra.sweeper.probe_k=3", "hydra.sweeper.verify=1", "measurement.repetitions=1", "logger=none"]
    proc = run_main(
        "-m", "hparams_search=best_k", "speculation=ngram", *args, *tiny_overrides(vllm_tiny_dir), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "outputs" / "sweeps").glob("*/best_k.json")
    summary = json.loads(path.read_text())
    curve = summary["curves"]["default"]
    verify = curve["verify_s"]  # t_verify(1..4), timed through vLLM's own time to first token
    assert len(verify) == 4 and all(0 < a <= b for a, b in zip(verify, verify[1:])) and curve["draft_token_s"] == 0
    assert "time to first token" in curve["source"] and len(curve["points"]) == 3
    assert summary["measured_runs"] == 2 and [p["role"] for p in summary["points"]] == ["probe", "verify"]
    assert all(p["measured_speedup"] > 0 and p["error"] is not None for p in summary["points"])
    assert {r["environment"]["engine"] for r in results_in(tmp_path)} == {"vllm"}


def test_a_draft_model_on_vllm_says_why_it_has_no_cost_curve(vllm_tiny_dir):
    from specsweep import backends
    from specsweep.backends.vllm.backend import VllmBackend
    from specsweep.models.resolve import resolve_models

    cfg = composed(vllm_tiny_dir, "speculation=draft_model", "speculation.num_speculative_tokens=2")
    models = resolve_models(cfg)
    engine = VllmBackend(cfg, backends.native_config(cfg, models), models, Session())  # never loaded: no timing
    with pytest.raises(NotImplementedError, match="cannot be timed apart"):
        engine.step_costs(load_prompts(cfg.dataset)[0], 3)
