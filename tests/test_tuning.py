"""Theory-guided tuning (hparams_search=best_k): candidate choice, prediction errors, and the real sweep end to end."""

from __future__ import annotations

import json
import math

import pytest

from conftest import results_in, run_main
from specsweep import tuning

CURVE = {
    "points": [
        {"k": 1, "speedup": 1.10, "iid_speedup": 1.5},
        {"k": 2, "speedup": 1.30, "iid_speedup": 1.8},
        {"k": 3, "speedup": 1.32, "iid_speedup": 2.0},
        {"k": 4, "speedup": 1.25, "iid_speedup": 2.1},
    ],
    "best_k": 3,
}


def test_candidates_are_the_best_predicted_k_other_than_the_probe():
    assert tuning.candidates(CURVE, verify=2, probe_k=4) == [3, 2]
    assert tuning.candidates(CURVE, verify=2, probe_k=3) == [2, 4]  # the probe's k is measured already


def test_a_point_carries_its_prediction_errors_and_a_failed_job_has_none():
    result = {"status": "ok", "metrics": {"speedup": 1.2}, "timing": {"generation_s": 30.0}}
    point = tuning.point_from(result, 2, None, "verify", "/runs/1", CURVE)
    assert point.measured_speedup == 1.2 and point.error == pytest.approx(0.1 / 1.2)
    assert point.iid_error == pytest.approx(0.6 / 1.2) and point.wall_s == 30.0
    failed = tuning.point_from({"status": "failed", "metrics": None}, 3, None, "verify", "/runs/2", CURVE)
    assert failed.measured_speedup is None and failed.error is None and failed.predicted_speedup == 1.32
    assert tuning.point_from(None, 4, None, "verify", None, CURVE).status == "failed"


def test_the_choice_is_the_best_measured_point_never_a_failed_one():
    points = [
        tuning.Point(k=8, window=None, role="probe", status="ok", run_dir="a", measured_speedup=1.1),
        tuning.Point(k=3, window=None, role="verify", status="ok", run_dir="b", measured_speedup=1.4),
        tuning.Point(k=2, window=None, role="verify", status="ok", run_dir="c", measured_speedup=math.nan),
        tuning.Point(k=4, window=None, role="verify", status="failed", run_dir="d"),
    ]
    assert tuning.choose(points).k == 3
    assert tuning.choose(points[2:]) is None


SMALL = ["dataset.num_prompts=2", "generation.max_new_tokens=12", "measurement.repetitions=1", "logger=none"]


def _summary(cwd) -> dict:
    (path,) = (cwd / "outputs" / "sweeps").glob(f"*/{tuning.SUMMARY_FILE}")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_best_k_probes_once_verifies_the_best_predicted_and_writes_its_summary(tmp_path, tiny_model_dir):
    tiny = [f"model.target={tiny_model_dir}", f"model.draft={tiny_model_dir}", "model.name=tiny"]
    proc = run_main("-m", "hparams_search=best_k", "hydra.sweeper.probe_k=4", *SMALL, *tiny, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(tmp_path)
    assert summary["measured_runs"] == 5 and len(results_in(tmp_path)) == 5  # probe, 2 verified, 2 adaptive
    adaptive = [p for p in summary["points"] if p["role"] == "adaptive"]
    probe, *verified = [p for p in summary["points"] if p["role"] != "adaptive"]
    curve = summary["curves"]["default"]
    assert probe["role"] == "probe" and probe["k"] == 4 and len(curve["points"]) == 4
    assert len(curve["verify_s"]) == 5 and curve["draft_token_s"] > 0 and "replayed" in curve["tokens_source"]
    assert [p["k"] for p in verified] == tuning.candidates(curve, 2, 4)
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
    assert "specsweep best_k: 5 measured runs" in proc.stderr and "beside it, adaptive heuristic" in proc.stderr


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


def test_adaptive_variants_are_reported_beside_the_choice_never_chosen(tmp_path):
    points = [
        tuning.Point(k=8, window=None, role="probe", status="ok", run_dir="a", measured_speedup=1.1),
        tuning.Point(k=3, window=None, role="verify", status="ok", run_dir="b", measured_speedup=1.4),
        tuning.Point(k=3, window=None, role="adaptive", status="ok", run_dir="c", measured_speedup=1.6),
    ]
    points[2].variant, points[2].variant_note, points[2].mean_drafted = "heuristic", "k=3 is its start", 4.25
    summary = tuning.Summary(method="draft_model", probe_k=8, measured_runs=3, points=points)
    summary.chosen = tuning.choose(points)
    assert summary.chosen.k == 3 and summary.chosen.role == "verify"  # a fixed k, even where adaptive measured more
    text = tuning.report_lines(summary, tmp_path / tuning.SUMMARY_FILE)
    assert "chosen: k=3 (1.400x)" in text
    assert "beside it, adaptive heuristic: measured 1.600x, 4.2 tokens drafted per step" in text


def test_transformers_declares_its_adaptive_draft_lengths_for_a_draft_model_only():
    from specsweep.backends import native_config, registry
    from specsweep.config.compose import compose_config
    from specsweep.models.resolve import ResolvedModels

    pytorch = registry()["pytorch"]
    assert pytorch.adaptive_drafts("ngram") == () and registry()["vllm"].adaptive_drafts("draft_model") == ()
    for variant in pytorch.adaptive_drafts("draft_model"):  # each switch lands in the assistant's generation_config
        cfg = compose_config(["speculation.num_speculative_tokens=4", *variant.overrides()])
        assistant = native_config(cfg, ResolvedModels(target="t", draft="d"))["assistant_generation_config"]
        assert assistant == {"num_assistant_tokens": 4, **variant.backend_overrides}
