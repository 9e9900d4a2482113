"""k per load level (hparams_search=k_by_load): the choice per level, the schedule built from it and mapped for each
engine, the schedule's check, and the order of the sweep's jobs through Hydra's launcher interface (planted results;
the real sweep on llama.cpp's server is tests/integration/test_served_engines.py)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from specsweep import load_tuning
from specsweep.load_tuning import Level, LoadPoint


def point(c, k, speedup, role="verify", ci=None):
    low, high = ci or (None, None)
    return LoadPoint(c, k, role, "ok", f"/runs/{c}-{k}", measured_speedup=speedup, ci_low=low, ci_high=high)


def test_a_level_keeps_its_best_measured_k_or_off_when_none_beat_the_baseline():
    paying = Level(concurrency=1)
    load_tuning.choose(paying, [point(1, 4, 1.30, "probe"), point(1, 2, 1.45), point(1, 3, 1.40, "schedule")])
    assert (paying.best_k, paying.best_speedup, paying.runner_up) == (2, 1.45, {"k": 4, "speedup": 1.30})
    losing = Level(concurrency=4)
    load_tuning.choose(losing, [point(4, 4, 0.70, "probe"), point(4, 1, 0.95)])
    assert (losing.best_k, losing.best_speedup, losing.runner_up) == (0, 1.0, {"k": 1, "speedup": 0.95})
    failed = Level(concurrency=8)
    load_tuning.choose(failed, [LoadPoint(8, 4, "probe", "failed", None)])
    assert failed.best_k is None and failed.runner_up is None


def test_the_schedule_starts_at_batch_size_1_merges_equal_neighbours_and_skips_unmeasured_levels():
    levels = [Level(2, best_k=2), Level(1, best_k=3), Level(4, best_k=2), Level(8, best_k=None), Level(16, best_k=0)]
    assert load_tuning.schedule_of(levels) == {1: 3, 2: 2, 16: 0}
    assert load_tuning.schedule_of([Level(2, best_k=4), Level(4, best_k=0)]) == {1: 4, 4: 0}
    engines = load_tuning.engine_schedules({1: 3, 2: 2, 16: 0})
    assert engines["vllm"]["num_speculative_tokens_per_batch_size"] == [[1, 1, 3], [2, 15, 2], [16, 2048, 0]]
    assert engines["tensorrt"]["draft_len_schedule"] == {1: 3, 15: 2}
    assert load_tuning.engine_schedules({1: 0}) == {}


def test_the_schedule_holds_within_3_percent_or_inside_its_interval_and_misses_otherwise():
    level = Level(1, best_k=2, best_speedup=1.50)
    assert load_tuning.check_schedule(level, point(1, 3, 1.46, "schedule"))["held"]  # 0.973 of the best
    missed = load_tuning.check_schedule(level, point(1, 3, 1.40, "schedule"))
    assert missed["held"] is False and missed["share"] == 1.40 / 1.50
    assert load_tuning.check_schedule(level, point(1, 3, 1.40, "schedule", ci=(1.30, 1.52)))["held"]
    off = load_tuning.check_schedule(Level(4, best_k=0, best_speedup=1.0), point(4, 3, 0.90, "schedule"))
    assert off["held"] is False and off["best"] == 1.0
    assert load_tuning.check_schedule(level, LoadPoint(1, 3, "schedule", "failed", None))["held"] is None


class PlantedLauncher:
    """Hydra's launcher interface (launch(job_overrides, initial_job_idx) -> JobReturns with a run dir) over planted
    results: speedup(concurrency, k, schedule) and per-position acceptance."""

    def __init__(self, tmp: Path, speedup, per_position, backend="vllm_server", method="ngram"):
        self.tmp, self.speedup, self.per_position, self.jobs = tmp, speedup, per_position, []
        self.backend, self.method = backend, method

    def launch(self, jobs, initial_job_idx):
        from hydra.core.utils import JobStatus

        returns = []
        for idx, job in enumerate(jobs, start=initial_job_idx):
            self.jobs.append(job)
            args = dict(a.lstrip("+").split("=", 1) for a in job)
            c, k = int(args["generation.concurrency"]), int(args["speculation.num_speculative_tokens"])
            run_dir = self.tmp / str(idx)
            run_dir.mkdir()
            result = {
                "status": "ok",
                "backend": self.backend,
                "method": self.method,
                "metrics": {
                    "speedup": self.speedup(c, k, args.get("speculation.k_schedule")),
                    "acceptance_per_position": self.per_position[:k],
                },
                "stats": {"paired_speedup": {"ci_low": None, "ci_high": None}},
                "timing": {"generation_s": 10.0},
            }
            (run_dir / "result.json").write_text(json.dumps(result))
            hydra_cfg = SimpleNamespace(hydra=SimpleNamespace(runtime=SimpleNamespace(output_dir=str(run_dir))))
            returns.append(SimpleNamespace(hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED))
        return returns


def test_the_sweep_probes_each_level_verifies_the_best_predicted_then_runs_the_schedule_everywhere(tmp_path, capsys):
    rates = [0.8, 0.6, 0.4, 0.2]
    growth = {1: 0.1, 2: 0.3, 4: 0.9}  # per drafted token: the step cost rises with the load

    def engine(c, k, schedule):
        if schedule:  # the engine runs the k its schedule gives this batch size
            pairs = dict(tuple(map(int, p.split(":"))) for p in schedule.strip("{}").split(","))
            k = pairs[max(b for b in pairs if b <= c)]
        return (1 + sum(rates[:k])) / (1 + growth[c] * k)

    launcher = PlantedLauncher(tmp_path / "runs", engine, rates)
    (tmp_path / "runs").mkdir()
    search = load_tuning.KByLoadSearch([4, 1, 2], probe_k=4, verify=1, sweep_dir=str(tmp_path / "sweep"))
    summary = search.run(launcher, ["backend=vllm_server", "speculation=ngram", "generation.concurrency=7"])
    roles = [(p.role, p.concurrency, p.k) for p in summary.points]
    best = {c: max(range(1, 5), key=lambda k: engine(c, k, None)) for c in (1, 2, 4)}
    assert roles[:3] == [("probe", 1, 4), ("probe", 2, 4), ("probe", 4, 4)]
    assert roles[3:6] == [("verify", c, best[c]) for c in (1, 2, 4)]  # the planted curve is exactly linear
    assert [lv.best_k for lv in summary.levels] == [best[1], best[2], 0]  # at 4 no k pays: off
    assert summary.schedule == {1: best[1], 2: best[2], 4: 0}
    assert roles[6:] == [("schedule", c, best[1]) for c in (1, 2, 4)]
    assert all(lv.schedule_check["held"] for lv in summary.levels)
    assert summary.search_runs == 6 and summary.search_s == 60.0
    assert all("generation.concurrency=7" not in job for job in launcher.jobs)
    assert launcher.jobs[-1][-1] == f"+speculation.k_schedule={{1:{best[1]},2:{best[2]},4:0}}"
    written = json.loads((tmp_path / "sweep" / load_tuning.SUMMARY_FILE).read_text())
    assert written["schedule"] == {"1": best[1], "2": best[2], "4": 0} and len(written["levels"]) == 3
    assert "specsweep k_by_load" in capsys.readouterr().err


def test_a_backend_without_a_schedule_gets_the_table_and_says_why_nothing_ran(tmp_path):
    (tmp_path / "runs").mkdir()
    launcher = PlantedLauncher(tmp_path / "runs", lambda c, k, s: 1.2 + 0.01 * k, [0.9] * 3, "llamacpp_server")
    search = load_tuning.KByLoadSearch([1, 2], probe_k=3, verify=1, sweep_dir=str(tmp_path / "sweep"))
    summary = search.run(launcher, ["backend=llamacpp_server", "speculation=ngram"])
    # llama.cpp's n-gram drafts refuse k < the n-gram size (3): no candidate validates, none is launched
    assert [p.role for p in summary.points] == ["probe", "probe"] and len(launcher.jobs) == 2
    assert "takes no per-batch-size k" in summary.note
    assert summary.schedule == {1: 3} and summary.engine_schedules["tensorrt"]["draft_len_schedule"] == {2048: 3}


def test_the_engines_adaptive_mode_is_measured_at_every_level_beside_the_fixed_k(tmp_path, capsys):
    (tmp_path / "runs").mkdir()

    def engine(c, k, schedule):
        return 1.1 if k == 1 else 0.9

    launcher = PlantedLauncher(tmp_path / "runs", engine, [0.5] * 4, "llamacpp_server", "draft_model")
    search = load_tuning.KByLoadSearch([1, 2], probe_k=4, verify=1, sweep_dir=str(tmp_path / "sweep"))
    summary = search.run(launcher, ["backend=llamacpp_server", "speculation=draft_model"])
    adaptive = [(p.role, p.concurrency, p.k, p.variant) for p in summary.points if p.role == "adaptive"]
    assert adaptive == [("adaptive", 1, 4, "p_min"), ("adaptive", 2, 4, "p_min")]  # p_min caps the draft at probe_k
    assert "++speculation.backend_overrides.p_min=0.75" in launcher.jobs[-1]
    assert [lv.adaptive for lv in summary.levels] == [{"p_min": 0.9}, {"p_min": 0.9}]
    assert [lv.best_k for lv in summary.levels] == [1, 1]  # an adaptive mode is reported beside, never chosen
    assert "the engine's adaptive p_min: c=1 0.900x, c=2 0.900x" in capsys.readouterr().err
