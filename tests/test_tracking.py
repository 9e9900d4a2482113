"""W&B tracker: offline runs hold the config, every summary scalar, per-prompt table, per-position chart; failures
are failed runs; an outage or a bad key never raises. Checked by reading the .wandb record file wandb wrote."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import read_records, run_main
from specsweep.tracking import NoTracker, make_tracker
from specsweep.tracking.config import LoggerConfig


def sample_result(status="ok") -> dict:
    """A result.json as app.py writes it (hand-written test input: the tracker's job is to copy it faithfully)."""
    ok = status == "ok"
    return {
        "status": status,
        "error": None if ok else "RuntimeError: out of memory",
        "config_hash": "abc123",
        "backend": "pytorch",
        "method": "draft_model",
        "k": 3,
        "ngram_min": None,
        "ngram_max": None,
        "model": "tiny",
        "dataset": "builtin",
        "overrides": ["speculation=draft_model", "speculation.num_speculative_tokens=3"],
        "config": {
            "speculation": {"method": "draft_model", "num_speculative_tokens": 3},
            "generation": {"max_new_tokens": 8},
        },
        "native_config": {"generate_kwargs": {"max_new_tokens": 8}},
        "metrics": {
            "tokens_per_s": 20.0,
            "speedup": 1.25,
            "acceptance_rate": 0.5,
            "mean_acceptance_length": 2.5,
            "acceptance_per_position": [0.8, 0.5, 0.2],
            "ttft_s": float("nan"),
        }
        if ok
        else None,
        "stats": {"speedup": {"n": 3, "median": 1.2, "ci_low": 1.1, "ci_high": 1.4}} if ok else None,
        "energy": {"joules": 12.5, "joules_per_token": 0.4, "per_device": {"cpu0": 12.5}, "estimated": True}
        if ok
        else None,
        "per_prompt": [
            {
                "id": "code-1",
                "category": "code",
                "output_tokens": 8,
                "speedup": 1.5,
                "acceptance_rate": 0.75,
                "output_text": "def f",
            },
            {
                "id": "chat-1",
                "category": "chat",
                "output_tokens": 8,
                "speedup": 1.0,
                "acceptance_rate": 0.25,
                "output_text": "Hi",
            },
        ]
        if ok
        else None,
        "lossless": {"checked": True, "match_rate": 1.0} if ok else None,
        "timing": {"load_s": 0.5} if ok else None,
        "theory": {"alpha": 0.6, "cost_ratio": 0.2, "predicted_speedup": 1.3, "predicted_best_k": 4} if ok else None,
        "environment": {"engine": "transformers", "torch_threads": 2} if ok else None,
    }


@pytest.mark.parametrize(
    "overrides, field, allowed",
    [
        (["logger.name=mlflow"], "logger.name", "one of none, wandb"),
        (["logger.mode=onlin"], "logger.mode", "one of offline, online"),
        (["logger.project=a/b"], "logger.project", "without '/'"),
        (["logger.init_timeout=0"], "logger.init_timeout", "a number > 0"),
    ],
)
def test_config_check_names_field_value_and_allowed(overrides, field, allowed):
    from specsweep.config.compose import compose_config
    from specsweep.config.validate import ConfigError, validate

    validate(compose_config(["logger=wandb"]))
    with pytest.raises(ConfigError) as info:
        validate(compose_config(["logger=wandb", *overrides]))
    assert info.value.field == field and allowed in str(info.value)
    assert isinstance(make_tracker(LoggerConfig(name="none")), NoTracker)


def test_offline_run_holds_config_summary_table_chart(tmp_path, isolated_home):
    run_dir, sweep_dir = tmp_path / "sweep" / "0", tmp_path / "sweep"
    make_tracker(LoggerConfig(name="wandb", tags=["nightly"]), run_dir, sweep_dir).log_result(sample_result())
    rec = read_records(run_dir)
    run = rec["run"]
    assert run.project == "specsweep" and run.run_group == "sweep"
    assert run.display_name == "speculation=draft_model,speculation.num_speculative_tokens=3"
    assert set(run.tags) == {"backend:pytorch", "method:draft_model", "model:tiny", "nightly"}
    cfg = rec["config"]
    assert cfg["method"] == "draft_model" and cfg["k"] == 3 and cfg["speculation"]["num_speculative_tokens"] == 3
    assert cfg["environment"]["engine"] == "transformers"
    s = rec["summary"]
    assert s["status"] == "ok" and s["metrics/speedup"] == 1.25 and s["metrics/acceptance_rate"] == 0.5
    assert "metrics/ttft_s" not in s  # NaN is "unknown", not a number
    assert (
        s["stats/speedup/ci_low"] == 1.1 and s["energy/joules_per_token"] == 0.4 and s["energy/per_device/cpu0"] == 12.5
    )
    assert s["theory/predicted_speedup"] == 1.3 and s["lossless/match_rate"] == 1.0 and s["timing/load_s"] == 0.5
    assert s["acceptance_position/1"] == 0.8 and s["acceptance_position/3"] == 0.2
    assert s["category/code/speedup"] == 1.5 and s["category/chat/acceptance_rate"] == 0.25
    (history,) = rec["history"]
    assert history["per_prompt/nrows"] == 2
    (table_file,) = (rec["dir"] / "files" / "media" / "table").glob("per_prompt_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:2] == ["id", "category"] and [r[1] for r in table["data"]] == ["code", "chat"]
    (chart,) = (rec["dir"] / "files" / "media" / "table").glob("acceptance_per_position_table_*.table.json")
    assert json.loads(chart.read_text())["data"] == [[1, 0.8], [2, 0.5], [3, 0.2]]
    assert rec["exit"].exit_code == 0
    assert not isolated_home.exists()  # caches and staging stayed under the run's output


def test_failed_job_is_a_failed_run_with_its_error(tmp_path, isolated_home):
    make_tracker(LoggerConfig(name="wandb"), tmp_path / "run").log_result(sample_result("failed"))
    rec = read_records(tmp_path / "run")
    assert rec["exit"].exit_code == 1
    assert rec["summary"]["status"] == "failed" and rec["summary"]["error"] == "RuntimeError: out of memory"
    assert rec["run"].run_group == ""  # a single run has no sweep group


def test_online_without_a_key_falls_back_to_offline(tmp_path, isolated_home, caplog):
    with caplog.at_level(logging.WARNING):
        make_tracker(LoggerConfig(name="wandb", mode="online", init_timeout=5), tmp_path / "run").log_result(
            sample_result()
        )
    assert "logging this run offline" in caplog.text
    assert read_records(tmp_path / "run")["summary"]["metrics/speedup"] == 1.25


def test_a_wandb_outage_warns_and_never_raises(tmp_path, isolated_home, monkeypatch, caplog):
    import wandb

    def down(*args, **kwargs):
        raise wandb.errors.CommError("network is unreachable")

    monkeypatch.setattr(wandb, "init", down)
    with caplog.at_level(logging.WARNING):
        make_tracker(LoggerConfig(name="wandb", mode="online"), tmp_path / "run").log_result(sample_result())
    assert "W&B logging failed, local results are intact" in caplog.text and "network is unreachable" in caplog.text


@pytest.mark.slow
def test_invalid_logger_mode_fails_at_validation_in_one_line(tmp_path):
    proc = run_main("logger=wandb", "logger.mode=onlne", "--dry-run", cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "logger.mode='onlne' is invalid: expected one of offline, online" in proc.stderr
