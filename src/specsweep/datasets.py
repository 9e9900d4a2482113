"""Prompt sets: the built-in workload mix and local JSONL files (including Spec-Bench / MT-Bench question.jsonl)."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Dict, List

from specsweep.core import Prompt


class DatasetError(ValueError):
    def __init__(self, field: str, value, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}={value!r} is invalid: expected {allowed}")


def _parse_line(line: str, where: str, lineno: int) -> Prompt:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError("dataset.path", f"{where}:{lineno}", f"one JSON object per line ({err.msg})") from None
    if not isinstance(row, dict):
        raise DatasetError("dataset.path", f"{where}:{lineno}", "one JSON object per line")
    if "turns" in row:  # Spec-Bench / MT-Bench question.jsonl: the first turn is the prompt
        turns = row["turns"]
        text = turns[0] if isinstance(turns, list) and turns and isinstance(turns[0], str) else None
        pid = row.get("question_id", lineno)
    else:
        text = row.get("prompt")
        pid = row.get("id", lineno)
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(
            "dataset.path", f"{where}:{lineno}", 'a non-empty "prompt" string (or Spec-Bench "turns": [str, ...])'
        )
    return Prompt(id=str(pid), category=str(row.get("category", "uncategorized")), text=text)


def _read(text: str, where: str) -> List[Prompt]:
    # JSON Lines separates records by "\n" only: str.splitlines() would also split inside valid JSON strings at
    # U+2028, U+2029, U+0085 and other Unicode line breaks.
    lines = text.split("\n")
    prompts = [_parse_line(line, where, n) for n, line in enumerate(lines, 1) if line.strip()]
    if not prompts:
        raise DatasetError("dataset.path", where, "a file with at least one prompt (it is empty)")
    _refuse_duplicate_ids(prompts, lines, where)
    return prompts


def _refuse_duplicate_ids(prompts: List[Prompt], lines: List[str], where: str) -> None:
    """Results are paired by prompt id (baseline, lossless check): two prompts with one id would be merged."""
    seen: Dict[str, int] = {}
    numbered = [n for n, line in enumerate(lines, 1) if line.strip()]
    for prompt, lineno in zip(prompts, numbered):
        if prompt.id in seen:
            raise DatasetError(
                "dataset.path",
                f"{where}:{lineno}",
                f"a unique prompt id (id {prompt.id!r} is also on line {seen[prompt.id]})",
            )
        seen[prompt.id] = lineno


def _sample(prompts: List[Prompt], n: int, seed: int) -> List[Prompt]:
    """Draw n prompts round-robin over categories (seeded), so a small sample still spans the workloads."""
    by_category = defaultdict(list)
    for p in prompts:
        by_category[p.category].append(p)
    rng = random.Random(seed)
    pools = [by_category[c] for c in sorted(by_category)]
    for pool in pools:
        rng.shuffle(pool)
    picked: List[Prompt] = []
    while len(picked) < n:
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(pool.pop())
    return picked


def load_prompts(ds) -> List[Prompt]:
    if ds.name == "builtin":
        prompts = _read(resources.files("specsweep.data").joinpath("builtin.jsonl").read_text(), "builtin")
    else:
        path = Path(ds.path).expanduser()
        try:
            prompts = _read(path.read_text(encoding="utf-8"), str(path))
        except UnicodeDecodeError:
            raise DatasetError("dataset.path", ds.path, "a UTF-8 text file") from None
    if ds.categories:
        known = sorted({p.category for p in prompts})
        unknown = [c for c in ds.categories if c not in known]
        if unknown:
            raise DatasetError("dataset.categories", unknown, f"categories present in the dataset: {', '.join(known)}")
        prompts = [p for p in prompts if p.category in ds.categories]
    if ds.num_prompts is not None and ds.num_prompts < len(prompts):
        prompts = _sample(prompts, ds.num_prompts, ds.seed)
    return prompts
