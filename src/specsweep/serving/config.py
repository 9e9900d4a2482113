"""Config rules every served backend shares (light: used at validation)."""

from __future__ import annotations

from typing import Dict, List

from specsweep.core import Problem


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


def external_url(cfg):
    """The running server a job measures (None: specsweep starts one): baseline_url for the no-speculation side
    when it is set, else url."""
    backend = cfg.backend
    if cfg.speculation.method == "none" and backend.baseline_url:
        return backend.baseline_url
    return backend.url
