"""The W&B tracker in a real sweep: `main.py -m logger=wandb` on a tiny model, two jobs in one W&B group, the
local results kept. The tracker on hand-written results is in tests/test_tracking.py."""

from __future__ import annotations

import pytest

from conftest import read_records, results_in, run_main


@pytest.mark.slow
def test_multirun_jobs_share_a_group_and_keep_local_results(tmp_path, tiny_model_dir, isolated_home):
    proc = run_main(
        "-m",
        "logger=wandb",
        "backend=pytorch",
        f"model.target={tiny_model_dir}",
        f"model.draft={tiny_model_dir}",
        "model.name=tiny",
        "speculation=ngram",
        "speculation.num_speculative_tokens=2,3",
        "dataset.num_prompts=1",
        "generation.max_new_tokens=6",
        "measurement.repetitions=1",
        "measurement.warmup=0",
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = results_in(tmp_path)
    assert len(results) == 2 and all(r["status"] == "ok" for r in results)
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    recs = [read_records(sweep / str(i)) for i in (0, 1)]
    assert {r["run"].run_group for r in recs} == {sweep.name}
    assert sorted(r["config"]["k"] for r in recs) == [2, 3]
    assert all(r["summary"]["theory/cost_ratio"] == 0.0 for r in recs)  # ngram: a table lookup
