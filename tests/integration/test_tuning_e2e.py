"""Theory-guided tuning end to end: `hparams_search=best_k` through main.py on a tiny model (probe, verify,
summary), for a draft model and for prompt lookup's windows. The pure parts are in tests/test_tuning.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import results_in, run_main
from specsweep import tuning

SMALL = [
    "backend=pytorch",
    "dataset.num_prompts=2",
    "generation.max_new_tokens=12",
    "measurement.repetitions=1",
    "logger=none",
]


def _summary(cwd) -> dict:
    (path,) = (cwd / "outputs" / "sweeps").glob(f"*/{tuning.SUMMARY_FILE}")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_best_k_probes_once_verifies_the_best_predicted_and_writes_its_summary(tmp_path, tiny_model_dir):
    tiny = [f"model.target={tiny_model_dir}", f"model.draft={tiny_model_dir}", "model.name=tiny"]
    proc = run_main("-m", "hparams_search=best_k", "hydra.sweeper.probe_k=4", *SMALL, *tiny, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(tmp_path)
    # the probe; one round robin of the probe's k and the 2 candidates on one baseline; the 2 adaptive variants
    assert summary["measured_runs"] == 4 and len(results_in(tmp_path)) == 4
    adaptive = [p for p in summary["points"] if p["role"] == "adaptive"]
    probe, *verified = [p for p in summary["points"] if p["role"] != "adaptive"]
    curve = summary["curves"]["default"]
    assert probe["role"] == "probe" and probe["k"] == 4 and len(curve["points"]) == 4
    assert len(curve["verify_s"]) == 5 and curve["draft_token_s"] > 0 and "replayed" in curve["tokens_source"]
    assert [p["k"] for p in verified] == tuning.candidates(curve, 2, 4)
    (shared,) = {p["shared_baseline"] for p in [probe, *verified]}
    round_robin = json.loads((Path(shared) / "result.json").read_text())
    assert round_robin["k"] == 4 and [c["k"] for c in round_robin["compared"]] == [p["k"] for p in verified]
    assert {c["metrics"]["baseline_tokens_per_s"] for c in round_robin["compared"]} == {
        round_robin["metrics"]["baseline_tokens_per_s"]
    }
    assert [c["lossless"]["match_rate"] for c in round_robin["compared"]] == [1.0, 1.0]
    for point in [probe, *verified]:  # every measured fixed k says how far each model was
        assert point["measured_speedup"] > 0 and point["error"] is not None and point["iid_error"] is not None
    best = max([probe, *verified], key=lambda p: p["measured_speedup"])
    assert summary["chosen"]["k"] == best["k"]
    # transformers' own adaptive draft lengths, measured beside the choice: the heuristic starts at the chosen k,
    # the confidence threshold drafts at most probe_k; each ran with its switch in the assistant's generation config
    assert [(p["variant"], p["k"]) for p in adaptive] == [("heuristic", best["k"]), ("confidence", 4)]
    assistants = {tuple(r["native_config"]["assistant_generation_config"].values()) for r in results_in(tmp_path)}
    assert (best["k"], "heuristic_transient", 0.0) in assistants and (4, "constant", 0.4) in assistants
    assert all(p["measured_speedup"] > 0 and p["mean_drafted"] > 0 and p["error"] is None for p in adaptive)
    assert summary["energy_optimal"]["k"] is None and "not measured" in summary["energy_optimal"]["reason"]
    assert "specsweep best_k: 4 measured runs" in proc.stderr and "beside it, adaptive heuristic" in proc.stderr
    assert f"verified in one round robin against one baseline: {shared}" in proc.stderr


@pytest.mark.slow
def test_best_k_for_prompt_lookup_probes_each_window(tmp_path, tiny_model_dir):
    tiny = [f"model.target={tiny_model_dir}", "model.name=tiny"]
    args = ["hydra.sweeper.probe_k=3", "hydra.sweeper.verify=1", "hydra.sweeper.windows=[1,2]"]
    proc = run_main("-m", "hparams_search=best_k", "speculation=ngram", *args, *SMALL, *tiny, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(tmp_path)
    assert sorted(summary["curves"]) == ["1", "2"] and summary["measured_runs"] == 4
    windows = {(p["role"], p["window"]) for p in summary["points"]}
    assert windows == {("probe", 1), ("probe", 2), ("verify", 1), ("verify", 2)}
    assert {r["ngram_max"] for r in results_in(tmp_path)} == {1, 2}
