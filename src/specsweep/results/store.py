"""The local results store: an atomic result.json per run, and JSONL tables of one summary row per job."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

RESULT_FILE = "result.json"
TABLE_FILE = "results.jsonl"
# Fields that change how a run is reported, not what it measures; they stay out of the config hash.
UNHASHED = ("logger", "force", "dry_run")


def config_hash(cfg) -> str:
    data = {k: v for k, v in asdict(cfg).items() if k not in UNHASHED}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def clean(value):
    """JSON has no NaN: unknown numbers are null. Enum members become their plain values."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_result(run_dir: Path, result: Dict[str, Any]) -> Path:
    """Write result.json atomically: a reader sees the old file or the whole new one, never a torn write."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RESULT_FILE
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".result.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(clean(result), f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def append_row(table: Path, row: Dict[str, Any]) -> None:
    """Append one JSON line under an exclusive lock (parallel launchers share the table)."""
    table.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, default=str) + "\n"
    with open(table, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_table(table: Path) -> Iterator[Dict[str, Any]]:
    """Rows of a results table; a line torn by a killed process is skipped, never fatal."""
    if not table.is_file():
        return
    with open(table) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row


def find_done(table: Path, cfg_hash: str) -> Optional[Dict[str, Any]]:
    """The latest ok row for this config, if its result.json is still there, says ok and is for this config."""
    found = None
    for row in read_table(table):
        if row.get("config_hash") == cfg_hash and row.get("status") == "ok":
            result = Path(row.get("run_dir", "")) / RESULT_FILE
            try:
                stored = json.loads(result.read_text())
                if stored.get("status") == "ok" and stored.get("config_hash") == cfg_hash:
                    found = row
            except (OSError, json.JSONDecodeError):
                continue
    return found
