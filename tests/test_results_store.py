"""The results store (`results/store.py`): result.json written atomically, the results table read past a torn
line, and finding a finished job only where its own result still is."""

from __future__ import annotations

import json

from specsweep.results import store


def test_result_json_is_written_atomically_and_nan_becomes_null(tmp_path):
    store.write_result(tmp_path, {"status": "ok", "metrics": {"x": float("nan"), "y": 1.5}})
    assert json.loads((tmp_path / "result.json").read_text())["metrics"] == {"x": None, "y": 1.5}
    assert not list(tmp_path.glob(".result.*"))


def test_table_survives_a_torn_line_and_find_done_checks_the_result_file(tmp_path):
    table = tmp_path / "results.jsonl"
    ok_dir, failed_dir = tmp_path / "0", tmp_path / "1"
    store.write_result(ok_dir, {"status": "ok", "config_hash": "a"})
    store.write_result(failed_dir, {"status": "failed", "config_hash": "b"})
    store.append_row(table, {"config_hash": "a", "status": "ok", "run_dir": str(ok_dir)})
    store.append_row(table, {"config_hash": "b", "status": "failed", "run_dir": str(failed_dir)})
    with open(table, "a") as f:
        f.write('{"config_hash": "c", "status": "o')  # a process killed mid-append
    assert [r["config_hash"] for r in store.read_table(table)] == ["a", "b"]
    assert store.find_done(table, "a")["run_dir"] == str(ok_dir)
    assert store.find_done(table, "b") is None
    (ok_dir / "result.json").unlink()
    assert store.find_done(table, "a") is None


def test_find_done_ignores_a_run_dir_reused_by_another_config(tmp_path):
    table, run_dir = tmp_path / "results.jsonl", tmp_path / "0"
    store.write_result(run_dir, {"status": "ok", "config_hash": "other"})
    store.append_row(table, {"config_hash": "mine", "status": "ok", "run_dir": str(run_dir)})
    assert store.find_done(table, "mine") is None
