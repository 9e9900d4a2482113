"""The result of one job: what result.json holds, as types, with one serializer.

`IDENTITY_FIELDS` is the one list of what identifies a job (what ran); the sweep-table row, the W&B config and the
report's series are all derived from it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Literal, Optional

from specsweep.results.store import clean

Status = Literal["running", "ok", "failed"]

# What identifies a job: its config hash, and the settings a reader compares jobs by.
IDENTITY_FIELDS = ("config_hash", "backend", "method", "k", "ngram_min", "ngram_max", "model", "dataset", "overrides")
# The measured sections `runner.run` returns.
MEASURED_SECTIONS = ("metrics", "stats", "per_prompt", "lossless", "energy", "baseline", "timing", "environment", "theory")
# The summary row's picks from the energy and stats sections.
ROW_ENERGY = ("joules", "joules_per_token", "joules_per_accepted_token", "energy_ratio", "source", "estimated",
              "unavailable_reason")
ROW_STATS = ("speedup", "tokens_per_s")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass
class Result:
    """result.json. Unknown numbers are null, never 0; a failed job keeps every section it got to."""

    status: Status
    error: Optional[str]  # one line, when status is failed
    config_hash: str  # hash of the resolved config (what reruns are keyed by)
    backend: str
    method: str
    k: Optional[int]
    ngram_min: Optional[int]
    ngram_max: Optional[int]
    model: str
    dataset: str
    overrides: List[str]  # the job's command-line overrides
    started_at: str
    config: Dict[str, Any]  # the resolved config
    finished_at: Optional[str] = None
    native_config: Optional[Dict[str, Any]] = None  # the exact engine config that was built
    metrics: Optional[Dict[str, Any]] = None
    stats: Optional[Dict[str, Any]] = None
    per_prompt: Optional[List[Dict[str, Any]]] = None
    lossless: Optional[Dict[str, Any]] = None
    energy: Optional[Dict[str, Any]] = None
    baseline: Optional[Dict[str, Any]] = None
    timing: Optional[Dict[str, Any]] = None
    environment: Optional[Dict[str, Any]] = None
    theory: Optional[Dict[str, Any]] = None

    @classmethod
    def start(cls, cfg, cfg_hash: str, overrides: List[str]) -> Result:
        spec = cfg.speculation
        return cls(
            status="running", error=None, config_hash=cfg_hash, backend=cfg.backend.name, method=str(spec.method),
            k=spec.num_speculative_tokens, ngram_min=spec.ngram_min, ngram_max=spec.ngram_max, model=cfg.model.name,
            dataset=str(cfg.dataset.name), overrides=list(overrides), started_at=now(), config=clean(asdict(cfg)),
        )

    def measured(self, sections: Dict[str, Any]) -> None:
        """Take the sections the runner measured."""
        for name in MEASURED_SECTIONS:
            setattr(self, name, sections.get(name))

    def identity(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (NaN and infinities become null)."""
        return clean(asdict(self))

    def summary_row(self, run_dir) -> Dict[str, Any]:
        """The job's row in the results tables."""
        energy, stats = self.energy or {}, self.stats or {}
        row = {"status": self.status, "error": self.error, **self.identity(), "run_dir": str(run_dir),
               "metrics": self.metrics or {}, "energy": {k: energy.get(k) for k in ROW_ENERGY},
               "stats": {k: v for k, v in stats.items() if k in ROW_STATS}, "theory": self.theory,
               "finished_at": self.finished_at}
        return clean(row)
