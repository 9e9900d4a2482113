"""The local results store: an atomic result.json per run, and JSONL tables of one summary row per job."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import tempfile
import time
import uuid
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


def rows_dir(table: Path) -> Path:
    """One file per row beside a table (`results.jsonl` -> `results.rows/`): safe where flock is not (some network
    file systems give each node its own lock, so appends from SLURM jobs on different nodes could interleave)."""
    return table.with_name(table.stem + ".rows")


def append_row(table: Path, row: Dict[str, Any]) -> None:
    """Record one row twice: its own file in `rows_dir(table)` (written whole, then renamed: atomic on every file
    system, NFS included), and one JSON line appended to the table under an exclusive lock, for people and `jq`."""
    table.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(row, default=str)
    rows = rows_dir(table)
    rows.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=rows, prefix=".row.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, rows / f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
    with open(table, "ab+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:  # a line torn by a killed writer must not swallow this one: end it first
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _table_rows(table: Path) -> Iterator[Dict[str, Any]]:
    if not table.is_file():
        return
    with open(table, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # torn by a killed process
                continue
            if isinstance(row, dict):
                yield row


def _row_files(table: Path) -> Iterator[Dict[str, Any]]:
    rows = rows_dir(table)
    for path in sorted(rows.glob("*.json")) if rows.is_dir() else ():
        try:
            row = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(row, dict):
            yield row


def _row_key(row: Dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def read_table(table: Path) -> Iterator[Dict[str, Any]]:
    """Every row of a results table: the row files, then any table line they lack (tables written before row files
    existed, or a row file lost); torn lines are skipped, never fatal. Row files come in the order they were written."""
    seen = set()
    for row in _row_files(table):
        seen.add(_row_key(row))
        yield row
    for row in _table_rows(table):
        if _row_key(row) not in seen:
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
