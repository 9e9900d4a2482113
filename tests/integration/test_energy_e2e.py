"""`python main.py energy=...` end to end on a tiny model: what lands in result.json."""

from __future__ import annotations

import json

import pytest

from conftest import results_in, run_main
from test_energy import FakeRapl, counters_here

pytestmark = pytest.mark.slow


def tiny(model_dir) -> list[str]:
    return [
        "backend=pytorch",
        f"model.target={model_dir}",
        f"model.draft={model_dir}",
        "model.name=tiny",
        "dataset.num_prompts=2",
        "generation.max_new_tokens=8",
        "measurement.warmup=0",
        "measurement.repetitions=1",
    ]


def test_zeus_reads_the_counter_here_or_says_why_not_and_codecarbon_estimates(tmp_path, tiny_model_dir):
    proc = run_main("-m", "energy=zeus,codecarbon", *tiny(tiny_model_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_meter = {r["config"]["energy"]["meter"]: r for r in results_in(tmp_path)}

    zeus = by_meter["zeus"]["energy"]
    assert by_meter["zeus"]["status"] == "ok"
    if counters_here():  # a GPU (NVML) or RAPL machine: real joules for both phases
        assert zeus["joules"] > 0 and zeus["baseline_joules"] > 0 and zeus["unavailable_reason"] is None
        assert zeus["estimated"] is False and zeus["source"].startswith("zeus-")
    else:
        assert zeus["joules"] is None and zeus["joules_per_token"] is None and zeus["baseline_joules"] is None
        assert "NVML" in zeus["unavailable_reason"] and "RAPL" in zeus["unavailable_reason"]

    cc = by_meter["codecarbon"]["energy"]
    assert cc["estimated"] is True and cc["source"] == "codecarbon-estimate"
    assert cc["joules"] > 0 and cc["baseline_joules"] > 0 and cc["energy_ratio"] > 0
    tokens = by_meter["codecarbon"]["metrics"]["output_tokens"]
    assert cc["joules_per_token"] == pytest.approx(cc["joules"] / tokens)
    rows = [
        json.loads(line)
        for line in next((tmp_path / "outputs" / "sweeps").rglob("results.jsonl")).read_text().splitlines()
    ]
    assert {r["energy"]["source"]: r["energy"]["estimated"] for r in rows} == {
        zeus["source"]: False,
        "codecarbon-estimate": True,
    }


def test_fake_rapl_counters_flow_to_joules_per_token(tmp_path, tiny_model_dir):
    package_w, dram_w = 40.0, 5.0
    rapl = FakeRapl(tmp_path / "powercap")
    stop = rapl.draw(package_w=package_w, dram_w=dram_w)
    try:
        proc = run_main(
            "energy=zeus", f"energy.rapl_dir={rapl.root}", "energy.gpu_indices=[]", *tiny(tiny_model_dir), cwd=tmp_path
        )
    finally:
        stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    [result] = results_in(tmp_path)
    e, m = result["energy"], result["metrics"]
    assert e["source"] == "zeus-rapl" and e["estimated"] is False and e["unavailable_reason"] is None
    # The counters advance at 45 W, so each window holds 45 W x its length (the writer updates every ~2 ms).
    assert e["joules"] == pytest.approx((package_w + dram_w) * e["windows"]["seconds"], rel=0.1)
    assert e["per_device"]["dram"] == pytest.approx(dram_w / package_w * e["per_device"]["cpu"], rel=0.1)
    assert e["joules_per_token"] == pytest.approx(e["joules"] / m["output_tokens"])
    assert e["joules_per_accepted_token"] == pytest.approx(e["joules"] / m["accepted_tokens"])
    assert e["baseline_joules"] == pytest.approx((package_w + dram_w) * e["baseline_windows"]["seconds"], rel=0.1)
    assert e["energy_ratio"] == pytest.approx(e["joules_per_token"] / e["baseline_joules_per_token"])
