"""result.json's contract: the committed JSON Schema and README table are generated from the types, and a result
the runner builds (here with the fake engine and meter of tests/fakes.py, so no model loads) validates; a broken
one does not. conftest.py validates every result.json the rest of the suite's jobs write against the same schema."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil

import pytest

from conftest import REPO, job_results_under
from fakes import FakeEngines, FakeMeter
from specsweep.config.compose import compose_config
from specsweep.core import AcceptanceCounts, Prompt
from specsweep.measure import runner
from specsweep.results import Result, config_hash, write_result
from specsweep.results.schema import (
    SCHEMA_PATH,
    contract_table,
    readme_with_contract,
    result_schema,
    schema_text,
    validation_errors,
)
from specsweep.session import Session


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((REPO / SCHEMA_PATH).read_text())


def test_committed_schema_is_the_one_generated_from_the_types(schema):
    generated = result_schema()
    assert schema == generated, "docs/result.schema.json is stale: run python scripts/result_schema.py"
    assert (REPO / SCHEMA_PATH).read_text() == schema_text(generated)


def test_readme_contract_table_is_generated_from_the_schema(schema):
    readme = (REPO / "README.md").read_text()
    assert readme_with_contract(readme, schema) == readme, (
        "README contract is stale: run python scripts/result_schema.py"
    )
    table = contract_table(schema)
    assert table in readme
    for name in schema["properties"]:  # every top-level field has its row, every section lists its keys
        assert f"| `{name}` |" in table
    assert "`tokens_per_s`" in table and "`idle_corrected`" in table and "`predicted_best_k`" in table


def test_schema_says_every_key_is_written_and_no_other(schema):
    sections = [schema, *schema["$defs"].values()]
    assert {"Metrics", "Spread", "Stats", "PromptRow", "Lossless", "Energy", "BaselineInfo", "Timing", "Theory"} <= set(
        schema["$defs"]
    )
    for node in sections:
        assert node["required"] == list(node["properties"]) and node["additionalProperties"] is False
        assert node["description"]
        assert all(prop.get("description") for prop in node["properties"].values()), node["title"]
    assert schema["properties"]["status"]["enum"] == ["running", "ok", "failed", "interrupted"]
    assert {"type": "null"} in schema["properties"]["metrics"]["anyOf"]  # a failed job may not have reached it


def measured_result() -> dict:
    cfg = compose_config(
        [
            "speculation=ngram",
            "speculation.num_speculative_tokens=3",
            "measurement.repetitions=3",
            "measurement.warmup=0",
        ]
    )
    prompts = [Prompt("a", "code", "x"), Prompt("b", "chat", "y")]
    result = Result.start(cfg, config_hash(cfg), ["speculation=ngram"])
    # speculative outputs report acceptance counts, and prompt 'b' differs from the baseline's at token 2
    acceptance = AcceptanceCounts(drafted=6, accepted=4, num_drafts=2, accepted_per_position=[2, 1, 1])
    engines = FakeEngines(tokens=4, per_token_s=0.1, acceptance=acceptance, diverge={"b": 2})
    result.measured(runner.run(cfg, prompts, engines, FakeMeter(), Session()))
    result.status, result.finished_at = "ok", "2026-01-01T00:00:01+00:00"
    return result.to_dict()


def test_a_result_the_runner_builds_validates_with_every_section_filled(schema, tmp_path):
    data = measured_result()
    assert validation_errors(data, schema) == []
    assert data["lossless"]["checked"] and data["lossless"]["match_rate"] == 0.5
    assert data["lossless"]["mismatches"] == [{"id": "b", "first_mismatch": 2}]
    assert [r["compared_to_baseline"] for r in data["per_prompt"]] == [True, True]
    assert data["energy"]["idle_corrected"]["baseline_joules"] is not None and data["theory"]["cost_ratio"] == 0.0
    assert data["metrics"]["peak_memory_mb"] == 12.5 and data["stats"]["speedup"]["n"] == 2
    write_result(tmp_path / "outputs" / "runs" / "fake", data)  # the session-end check validates it once more


@pytest.mark.parametrize(
    "path, value, complaint",
    [
        (("metrics", "tokens_per_s"), "fast", "is not valid"),  # a string where a number belongs
        (("energy", "windows", "count"), None, "is not of type 'integer'"),
        (("per_prompt", 0, "speedup"), [1.0], "is not valid"),
        (("status",), "done", "is not one of"),
        (("lossless", "surprise"), 1, "Additional properties"),  # a key the types do not have
    ],
)
def test_a_broken_result_fails_validation_and_says_where(schema, path, value, complaint):
    data = copy.deepcopy(measured_result())
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    errors = validation_errors(data, schema)
    where = ".".join(str(p) for p in path[:-1] if path[-1] == "surprise") or ".".join(str(p) for p in path)
    assert any(e.startswith(f"{where}: ") and complaint in e for e in errors), errors


def test_a_missing_key_fails_validation(schema):
    data = measured_result()
    del data["theory"]["predicted_speedup"]
    assert validation_errors(data, schema) == ["theory: 'predicted_speedup' is a required property"]


def test_session_check_covers_job_outputs_only(tmp_path):
    job = tmp_path / "t0" / "outputs" / "sweeps" / "s" / "0" / "result.json"
    store_input = tmp_path / "t1" / "0" / "result.json"  # a results-store unit test's hand-made input
    write_result(job.parent, measured_result())  # valid: the session-end check reads it too
    write_result(store_input.parent, {"status": "ok"})
    assert job_results_under(tmp_path) == [job]


def _load_script():
    spec = importlib.util.spec_from_file_location("result_schema_script", REPO / "scripts" / "result_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_check_passes_here_and_fails_on_a_stale_copy(tmp_path, monkeypatch):
    script = _load_script()
    assert script.main(["--check"]) == 0
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    stale = json.loads((REPO / SCHEMA_PATH).read_text())
    stale["$defs"]["Metrics"]["properties"].pop("speedup")
    (tmp_path / SCHEMA_PATH).write_text(json.dumps(stale))
    monkeypatch.setattr(script, "REPO", tmp_path)
    assert script.main(["--check"]) == 1
    assert script.main([]) == 0 and script.main(["--check"]) == 0  # rewritten
    assert (tmp_path / SCHEMA_PATH).read_text() == (REPO / SCHEMA_PATH).read_text()
