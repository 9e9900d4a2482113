"""Prompts (`datasets.py`): the built-in set and its stratified, seeded sample; Spec-Bench's question.jsonl; and
prompt files that slip past a naive reader: malformed lines, Unicode line separators inside JSON strings, duplicate
prompt ids."""

from __future__ import annotations

import json

import pytest

from conftest import run_main
from specsweep.config.schema import DatasetConfig
from specsweep.datasets import DatasetError, load_prompts


def test_unicode_line_separators_inside_json_strings_do_not_split_records(tmp_path):
    path = tmp_path / "prompts.jsonl"
    text = "first\u2028second\u2029third\u0085fourth\x1cfifth"
    rows = [{"id": "a", "prompt": text, "category": "qa"}, {"id": "b", "prompt": "plain", "category": "qa"}]
    path.write_text("\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n", encoding="utf-8")
    prompts = load_prompts(DatasetConfig(name="jsonl", path=str(path), num_prompts=None))
    assert [(p.id, p.text) for p in prompts] == [("a", text), ("b", "plain")]


def test_duplicate_prompt_ids_are_refused_naming_both_lines(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "q1", "prompt": "one"}\n\n{"id": "q2", "prompt": "two"}\n{"id": "q1", "prompt": "three"}\n')
    with pytest.raises(DatasetError) as info:
        load_prompts(DatasetConfig(name="jsonl", path=str(path), num_prompts=None))
    assert info.value.value == f"{path}:4" and "also on line 1" in info.value.allowed
    spec_bench = tmp_path / "question.jsonl"  # Spec-Bench ids are question_id
    spec_bench.write_text('{"question_id": 7, "turns": ["a"]}\n{"question_id": 7, "turns": ["b"]}\n')
    with pytest.raises(DatasetError, match="question.jsonl:2"):
        load_prompts(DatasetConfig(name="jsonl", path=str(spec_bench), num_prompts=None))


def test_cli_refuses_duplicate_ids_and_zero_prompts_in_one_line(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "x", "prompt": "one"}\n{"id": "x", "prompt": "two"}\n')
    dup = run_main("dataset=jsonl", f"dataset.path={path}", cwd=tmp_path, timeout=120)
    assert dup.returncode == 2 and dup.stderr.strip() == (
        f"specsweep: config error: dataset.path='{path}:2' is invalid: "
        "expected a unique prompt id (id 'x' is also on line 1)"
    )
    zero = run_main("dataset.num_prompts=0", cwd=tmp_path, timeout=120)
    assert zero.returncode == 2 and "dataset.num_prompts=0 is invalid: expected an integer >= 1" in zero.stderr
    assert not (tmp_path / "outputs").exists()


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
