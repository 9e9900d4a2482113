"""Theory-guided tuning (hparams_search=best_k): candidate choice, prediction errors, the summary, the adaptive
variants. The real sweep end to end is in tests/integration/test_tuning_e2e.py."""

from __future__ import annotations

import math

import pytest

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
        cfg = compose_config(["backend=pytorch", "speculation.num_speculative_tokens=4", *variant.overrides()])
        assistant = native_config(cfg, ResolvedModels(target="t", draft="d"))["assistant_generation_config"]
        assert assistant == {"num_assistant_tokens": 4, **variant.backend_overrides}


class PlantedLauncher:
    """Hydra's launcher interface over planted results: the true speedup at each k, and a factor per job (the noise
    of the baseline a job measured) multiplied into every speedup that job reports. A job with measurement.compare_k
    reports its other k values in `compared`, all against its one baseline."""

    def __init__(self, tmp, true_speedup, job_factor, pairing):
        self.tmp, self.true, self.factor, self.pairing, self.jobs = tmp, true_speedup, job_factor, pairing, []

    def result(self, idx: int, args: dict) -> dict:
        k, factor = int(args["speculation.num_speculative_tokens"]), self.factor[idx]
        compare = [int(c) for c in args.get("measurement.compare_k", "[]").strip("[]").split(",") if c]
        interval = lambda s: {"ci_low": s * 0.98, "ci_high": s * 1.02, "met": True}  # noqa: E731
        return {
            "status": "ok",
            "backend": "llamacpp",
            "method": "draft_model",
            "k": k,
            "metrics": {"speedup": self.true[k] * factor},
            "stats": {"paired_speedup": interval(self.true[k] * factor)},
            "baseline": {"pairing": self.pairing},
            "timing": {"generation_s": 10.0},
            "theory": {"curve": CURVE} if args.get("measurement.cost_model") == "true" else {},
            "compared": [
                {
                    "k": c,
                    "metrics": {"speedup": self.true[c] * factor},
                    "paired_speedup": interval(self.true[c] * factor),
                }
                for c in compare
            ],
        }

    def launch(self, jobs, initial_job_idx):
        import json
        from types import SimpleNamespace

        from hydra.core.utils import JobStatus

        returns = []
        for idx, job in enumerate(jobs, start=initial_job_idx):
            self.jobs.append(job)
            run_dir = self.tmp / str(idx)
            run_dir.mkdir()
            (run_dir / "result.json").write_text(json.dumps(self.result(idx, dict(a.split("=", 1) for a in job))))
            hydra_cfg = SimpleNamespace(hydra=SimpleNamespace(runtime=SimpleNamespace(output_dir=str(run_dir))))
            returns.append(SimpleNamespace(hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED))
        return returns


TRUE = {2: 1.30, 3: 1.32, 4: 1.25}


def test_where_the_backend_pairs_interleaved_the_probe_k_and_the_candidates_share_one_round_robin(tmp_path):
    """Separately measured baselines would have made k=2 look best (job 2's baseline ran slow: factor 1.1); in one
    round robin every k sees the same baseline, and the truly best k=3 is chosen from that job's measurements."""
    launcher = PlantedLauncher(tmp_path, TRUE, job_factor={0: 0.9, 1: 1.0, 2: 1.1}, pairing="interleaved")
    summary = tuning.BestKSearch(4, 2, [], str(tmp_path / "sweep"), adaptive=False).run(launcher, ["logger=none"])
    probe_job, shared = launcher.jobs
    assert "measurement.cost_model=true" in probe_job
    assert shared[-1] == "measurement.compare_k=[3,2]" and "speculation.num_speculative_tokens=4" in shared
    assert summary.measured_runs == 2 and summary.chosen.k == 3
    points = {(p.role, p.k): p for p in summary.points}
    assert sorted(points) == [("probe", 4), ("verify", 2), ("verify", 3)]  # the probe's own job is superseded
    assert points[("probe", 4)].measured_speedup == 1.25 and points[("verify", 2)].measured_speedup == 1.30
    assert {p.shared_baseline for p in summary.points} == {str(tmp_path / "1")}
    assert points[("verify", 3)].ci == pytest.approx([1.32 * 0.98, 1.32 * 1.02]) and points[("verify", 3)].target_met
    assert points[("verify", 2)].error == pytest.approx(0.0)  # the curve predicted 1.30 at k=2


def test_where_the_backend_pairs_phased_each_candidate_is_its_own_job(tmp_path):
    launcher = PlantedLauncher(tmp_path, TRUE, job_factor={0: 1.0, 1: 1.0, 2: 1.0}, pairing="phased")
    summary = tuning.BestKSearch(4, 2, [], str(tmp_path / "sweep"), adaptive=False).run(launcher, ["logger=none"])
    assert [j[-2] for j in launcher.jobs[1:]] == [f"speculation.num_speculative_tokens={k}" for k in (3, 2)]
    assert not any("compare_k" in a for job in launcher.jobs for a in job)
    assert summary.measured_runs == 3 and summary.chosen.k == 3
    assert all(p.shared_baseline is None for p in summary.points)


def test_a_candidate_the_engine_would_refuse_is_skipped_before_anything_is_launched(tmp_path):
    """llama.cpp's prompt lookup drafts at least ngram_max (3) tokens: k=2, predicted second best, never runs."""
    launcher = PlantedLauncher(tmp_path, {**TRUE, 1: 1.0}, job_factor={0: 1.0, 1: 1.0}, pairing="interleaved")
    search = tuning.BestKSearch(4, 2, [], str(tmp_path / "sweep"), adaptive=False)
    summary = search.run(launcher, ["speculation=ngram", "logger=none"])
    assert launcher.jobs[1][-1] == "measurement.compare_k=[3]" and summary.measured_runs == 2
