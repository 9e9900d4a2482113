"""Fast unit tests: the pure pieces (mapping, metrics, datasets, results store, packaged-model checks)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

import pytest

from specsweep import results
from specsweep.backends.pytorch.mapping import native_config
from specsweep.config.schema import DatasetConfig, GenerationConfig, SpeculationConfig
from specsweep.core import AcceptanceCounts
from specsweep.datasets import DatasetError, load_prompts
from specsweep.measure import metrics
from specsweep.models import packaged

# --- PyTorch mapping -------------------------------------------------------------------------------------------


def test_pytorch_draft_model_k_goes_to_the_assistant_with_a_fixed_schedule():
    native = native_config(SpeculationConfig(method="draft_model", num_speculative_tokens=7), GenerationConfig())
    assert native["assistant_generation_config"] == {
        "num_assistant_tokens": 7,
        "num_assistant_tokens_schedule": "constant",
        "assistant_confidence_threshold": 0.0,
    }
    assert "prompt_lookup_num_tokens" not in native["generate_kwargs"]
    assert native["generate_kwargs"]["do_sample"] is False


def test_pytorch_ngram_maps_k_and_window_and_defaults_to_transformers_window():
    native = native_config(SpeculationConfig(method="ngram", num_speculative_tokens=3, ngram_max=4), GenerationConfig())
    assert native["generate_kwargs"]["prompt_lookup_num_tokens"] == 3
    assert native["generate_kwargs"]["max_matching_ngram_size"] == 4
    default = native_config(SpeculationConfig(method="ngram", num_speculative_tokens=3), GenerationConfig())
    assert default["generate_kwargs"]["max_matching_ngram_size"] == 2


def test_pytorch_sampling_and_backend_overrides_are_routed():
    spec = SpeculationConfig(
        method="draft_model",
        num_speculative_tokens=4,
        backend_overrides={"num_assistant_tokens_schedule": "heuristic", "repetition_penalty": 1.1},
    )
    native = native_config(spec, GenerationConfig(temperature=0.7, top_p=0.9))
    assert native["assistant_generation_config"]["num_assistant_tokens_schedule"] == "heuristic"
    assert native["generate_kwargs"]["repetition_penalty"] == 1.1
    assert native["generate_kwargs"]["do_sample"] is True and native["generate_kwargs"]["temperature"] == 0.7


# --- metrics ----------------------------------------------------------------------------------------------------


def test_acceptance_counts_follow_vllm_definitions():
    counts = AcceptanceCounts()
    counts.record_step(drafted=4, accepted=4)
    counts.record_step(drafted=4, accepted=1)
    counts.record_step(drafted=0, accepted=0)  # no draft this step: not a draft step
    counts.record_step(drafted=4, accepted=0)
    m = metrics.acceptance_metrics(counts)
    assert m["drafted_tokens"] == 12 and m["accepted_tokens"] == 5 and m["num_drafts"] == 3
    assert m["acceptance_rate"] == pytest.approx(5 / 12)
    assert m["mean_acceptance_length"] == pytest.approx(1 + 5 / 3)
    assert m["acceptance_per_position"] == pytest.approx([2 / 3, 1 / 3, 1 / 3, 1 / 3])
    merged = counts + AcceptanceCounts(drafted=2, accepted=2, num_drafts=1, accepted_per_position=[1, 1])
    assert merged.accepted_per_position == [3, 2, 1, 1] and merged.num_drafts == 4


def test_acceptance_metrics_without_drafts_are_null_not_zero():
    m = metrics.acceptance_metrics(None)
    assert m["acceptance_rate"] is None and m["mean_acceptance_length"] is None


def test_spread_reports_n_median_and_an_interval_that_contains_it():
    s = metrics.spread([1.0, 2.0, 3.0, 4.0, 100.0, None, float("nan")], 0.95)
    assert s["n"] == 5 and s["median"] == 3.0
    assert s["ci_low"] <= s["median"] <= s["ci_high"]
    assert metrics.spread([2.0, 3.0], 0.95)["ci_low"] is None  # too few for an interval
    assert metrics.spread([], 0.95)["median"] is None


def test_first_mismatch():
    assert metrics.first_mismatch([1, 2, 3], [1, 2, 3]) is None
    assert metrics.first_mismatch([1, 2, 3], [1, 9, 3]) == 1
    assert metrics.first_mismatch([1, 2], [1, 2, 3]) == 2


# --- datasets ---------------------------------------------------------------------------------------------------


def test_builtin_prompts_span_the_workloads_and_sampling_is_stratified_and_seeded():
    everything = load_prompts(DatasetConfig())
    categories = {p.category for p in everything}
    assert {"code", "editing", "summarization", "qa", "translation", "math", "chat"} <= categories
    sample = load_prompts(DatasetConfig(num_prompts=7, seed=3))
    assert len({p.category for p in sample}) == 7
    assert [p.id for p in sample] == [p.id for p in load_prompts(DatasetConfig(num_prompts=7, seed=3))]
    assert [p.id for p in sample] != [p.id for p in load_prompts(DatasetConfig(num_prompts=7, seed=4))]


def test_spec_bench_question_jsonl_is_read(tmp_path):
    path = tmp_path / "question.jsonl"
    rows = [
        {"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now a limerick."]},
        {"question_id": 82, "category": "math", "turns": ["What is 2+2?"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    prompts = load_prompts(DatasetConfig(name="jsonl", path=str(path)))
    assert [(p.id, p.category, p.text) for p in prompts] == [
        ("81", "writing", "Write a haiku."),
        ("82", "math", "What is 2+2?"),
    ]


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"turns": []}\n')
    with pytest.raises(DatasetError) as info:
        load_prompts(DatasetConfig(name="jsonl", path=str(path)))
    assert info.value.value == f"{path}:3"


# --- results store ----------------------------------------------------------------------------------------------


def test_result_json_is_written_atomically_and_nan_becomes_null(tmp_path):
    results.write_result(tmp_path, {"status": "ok", "metrics": {"x": float("nan"), "y": 1.5}})
    assert json.loads((tmp_path / "result.json").read_text())["metrics"] == {"x": None, "y": 1.5}
    assert not list(tmp_path.glob(".result.*"))


def test_table_survives_a_torn_line_and_find_done_checks_the_result_file(tmp_path):
    table = tmp_path / "results.jsonl"
    ok_dir, failed_dir = tmp_path / "0", tmp_path / "1"
    results.write_result(ok_dir, {"status": "ok", "config_hash": "a"})
    results.write_result(failed_dir, {"status": "failed", "config_hash": "b"})
    results.append_row(table, {"config_hash": "a", "status": "ok", "run_dir": str(ok_dir)})
    results.append_row(table, {"config_hash": "b", "status": "failed", "run_dir": str(failed_dir)})
    with open(table, "a") as f:
        f.write('{"config_hash": "c", "status": "o')  # a process killed mid-append
    assert [r["config_hash"] for r in results.read_table(table)] == ["a", "b"]
    assert results.find_done(table, "a")["run_dir"] == str(ok_dir)
    assert results.find_done(table, "b") is None
    (ok_dir / "result.json").unlink()
    assert results.find_done(table, "a") is None


# --- packaged models --------------------------------------------------------------------------------------------


def _fake_wheel(path: Path, n: int, data: bytes) -> Path:
    """A real wheel laid out as the genuine model wheels are: pkg/__init__.py, pkg/data/partNN.bin, dist-info."""
    pkg, dist_info = f"fakemodel_part{n}", f"fakemodel_part{n}-1.0.dist-info"
    members = {
        f"{pkg}/__init__.py": b"raise RuntimeError('must never be imported')\n",
        f"{pkg}/data/part{n:02d}.bin": data,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.4\nName: fakemodel-part{n}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/top_level.txt": f"{pkg}\n".encode(),
        f"{dist_info}/RECORD": b"",
    }
    with zipfile.ZipFile(path / f"{pkg}-1.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path / f"{pkg}-1.0-py3-none-any.whl"


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Two pinned fake model wheels in the cache's wheels dir, never installed (nothing of theirs on sys.path)."""
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    wheels = packaged.wheels_dir()
    wheels.mkdir(parents=True)
    payload = [b"GGUF" + b"a" * 1000, b"b" * 500]
    pins = tuple(hashlib.sha256(_fake_wheel(wheels, n, d).read_bytes()).hexdigest() for n, d in enumerate(payload, 1))
    joined = b"".join(payload)
    model = packaged.PackagedModel(
        "fake", "fakemodel_part", 2, "1.0", len(joined), hashlib.sha256(joined).hexdigest(), pins
    )
    return model, wheels


def test_parts_are_joined_and_verified_without_importing_them(fake_parts, tmp_path):
    model, _ = fake_parts
    out = packaged.join_and_verify(model, tmp_path / "joined.gguf")
    assert out.read_bytes().startswith(b"GGUF") and out.stat().st_size == model.gguf_size
    assert "fakemodel_part1" not in sys.modules
    # Only the joined file was written: nothing extracted from the wheels (no package dir, no __init__.py).
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".whl") == ["joined.gguf"]


def test_corrupt_part_is_refused_and_leaves_nothing(fake_parts, tmp_path):
    model, wheels = fake_parts
    corrupt = _fake_wheel(wheels, 2, b"c" * 500)
    # Pinned as it is (a bad upload whose pin was updated): the joined sha256 refuses it.
    repinned = dataclasses.replace(
        model, wheel_sha256=(model.wheel_sha256[0], hashlib.sha256(corrupt.read_bytes()).hexdigest())
    )
    with pytest.raises(packaged.PackagedModelError, match="sha256"):
        packaged.join_and_verify(repinned, tmp_path / "joined.gguf")
    assert not list(tmp_path.glob("joined*"))
    # Against the real pin: refused before it is even opened, naming the wheel file.
    pinned = re.escape(str(corrupt)) + f".*pinned {model.wheel_sha256[1]}"
    with pytest.raises(packaged.PackagedModelError, match=pinned):
        packaged.join_and_verify(model, tmp_path / "joined.gguf")
    assert not list(tmp_path.glob("joined*"))


def test_missing_part_file_is_named(fake_parts, tmp_path):
    model, wheels = fake_parts
    missing = wheels / model.wheel_file(2)
    missing.unlink()
    with pytest.raises(packaged.PackagedModelError, match=re.escape(str(missing))):
        packaged.join_and_verify(model, tmp_path / "joined.gguf")
    # A wheel without its data member (pinned as it is) is named, with the member it lacks.
    with zipfile.ZipFile(missing, "w") as zf:
        zf.writestr("fakemodel_part2/__init__.py", "")
    repinned = dataclasses.replace(
        model, wheel_sha256=(model.wheel_sha256[0], hashlib.sha256(missing.read_bytes()).hexdigest())
    )
    lacks = re.escape(f"{missing} lacks its data member 'fakemodel_part2/data/part02.bin'")
    with pytest.raises(packaged.PackagedModelError, match=lacks):
        packaged.join_and_verify(repinned, tmp_path / "joined.gguf")
    assert not list(tmp_path.glob("joined*"))


def test_requirements_file_matches_the_registry():
    text = (Path(__file__).parents[1] / "requirements-models.txt").read_text()
    listed = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert listed == [r for m in packaged.PACKAGED_MODELS.values() for r in m.requirements()]
    assert all(" --hash=sha256:" in line for line in listed)  # pip refuses --require-hashes otherwise


def test_find_done_ignores_a_run_dir_reused_by_another_config(tmp_path):
    table, run_dir = tmp_path / "results.jsonl", tmp_path / "0"
    results.write_result(run_dir, {"status": "ok", "config_hash": "other"})
    results.append_row(table, {"config_hash": "mine", "status": "ok", "run_dir": str(run_dir)})
    assert results.find_done(table, "mine") is None
