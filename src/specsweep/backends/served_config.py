"""The declaration half every served backend shares (light: used at validation; imports no server code).

A served backend measures a server under load: one timed call sends every prompt as a streaming request, at most
generation.concurrency in flight (specsweep.serving). Its declaration subclasses `ServedBackendConfig`, declares the
fields `url`, `baseline_url`, `extra_args`, `startup_timeout_s`, `request_timeout_s` and `log_dir`, and names the
command-line flags specsweep sets itself (`managed_flags`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional

from specsweep.backends.base import BackendConfig
from specsweep.core import Problem


@dataclass
class ServedBackendConfig(BackendConfig):
    """What differs for a served backend: the load settings apply (and batches do not), they identify the job, an
    external server can be measured at `url`, and the flags specsweep sets may not be passed again."""

    managed_flags: ClassVar[Dict[str, str]] = {}  # server flag -> the field that sets it
    # Each load level is paired with its own baseline (generation.concurrency is in the baseline key), and a sweep
    # such as speculation=none,ngram generation.concurrency=1,4 runs every `none` job first: keep them all.
    kept_baselines = 16

    def generation_problems(self, cfg) -> List[Problem]:
        if cfg.generation.batch_size != 1:
            allowed = f"1 on backend={self.name} (a served backend's load is generation.concurrency)"
            return [("generation.batch_size", cfg.generation.batch_size, allowed)]
        return []

    def load_identity(self, generation) -> Dict[str, Any]:
        return {"concurrency": generation.concurrency, "request_rate": generation.request_rate}

    def served_problems(self, cfg) -> List[Problem]:
        """The rules every served backend checks: its URLs and the flags it manages."""
        return url_problems(cfg) + flag_problems(self.extra_args, self.managed_flags)


def url_problems(cfg) -> List[Problem]:
    """backend.url / baseline_url: URLs, baseline_url only beside url, and a baseline server for a speculative job."""
    backend, problems = cfg.backend, []
    for name in ("url", "baseline_url"):
        value = getattr(backend, name)
        if value is not None and not str(value).startswith(("http://", "https://")):
            problems.append((f"backend.{name}", value, "an http:// or https:// URL of a running server"))
    if backend.baseline_url is not None and backend.url is None:
        problems.append(("backend.baseline_url", backend.baseline_url, "null unless backend.url is set"))
    speculative = cfg.speculation.method != "none"
    if backend.url and speculative and cfg.measurement.baseline and backend.baseline_url is None:
        allowed = "the URL of the same model served without speculation (or measurement.baseline=false)"
        problems.append(("backend.baseline_url", None, allowed))
    return problems


def flag_problems(extra_args: List[str], managed: Dict[str, str]) -> List[Problem]:
    """Extra server flags that specsweep sets itself (a second copy would fight the one it sets)."""
    problems = []
    for arg in extra_args:
        flag = str(arg).split("=")[0]
        if flag in managed:
            problems.append(("backend.extra_args", arg, f"no {flag}: use {managed[flag]}"))
    return problems


def external_url(cfg) -> Optional[str]:
    """The running server a job measures (None: specsweep starts one): baseline_url for the no-speculation side
    when it is set, else url."""
    backend = cfg.backend
    if cfg.speculation.method == "none" and backend.baseline_url:
        return backend.baseline_url
    return backend.url
