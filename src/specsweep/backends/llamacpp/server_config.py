"""backend=llamacpp_server: llama.cpp's own server under load. Never imports xllamacpp.

The served mode of the llama.cpp backend: it shares this package's settings (threads, context, batch, GPU layers, the
n-gram proposer), its checks of the speculation settings and its CommonParams mapping with the offline
`backend=llamacpp`; the server lifecycle, the load generator and the Prometheus reading are the neutral
`specsweep.serving`. specsweep starts `xllamacpp.Server` in a process of its own (`backends/llamacpp/serve.py`) with
one slot per request in flight (generation.concurrency), or measures an existing `llama-server` at `url`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from specsweep.backends.llamacpp import config as llamacpp_config
from specsweep.backends.llamacpp import server_mapping
from specsweep.backends.llamacpp.config import LlamacppBackendConfig, _mtp_problem
from specsweep.backends.served_config import ServedBackendConfig
from specsweep.core import Problem
from specsweep.fields import bounded
from specsweep.models.resolve import ResolvedModels


@dataclass
class LlamacppServerBackendConfig(ServedBackendConfig, LlamacppBackendConfig):
    """llama.cpp's server (xllamacpp.Server in a process of its own, `n_parallel` = generation.concurrency slots of
    backend.n_ctx tokens each) started by specsweep on a free loopback port, or the `llama-server` at `url`,
    measured with streaming requests; acceptance from its /metrics spec-decode counters, differenced around each
    measurement window."""

    engine = "specsweep.backends.llamacpp.server_backend.LlamacppServerBackend"
    distributions = ("xllamacpp",)
    single_engine_reason = (
        "one llama.cpp server at a time: its requests cannot turn drafting off (xllamacpp ignores per-request "
        "speculative settings), so the baseline is a server of its own, started after the speculative one stops"
    )
    managed_flags = server_mapping.MANAGED_FLAGS

    name: str = "llamacpp_server"
    url: Optional[str] = None  # an already-running llama-server to measure (nothing is started), e.g. http://host:8080
    baseline_url: Optional[str] = None  # with url: the same model served without speculation, to pair with
    # appended to the serve module's command line as --<CommonParams field>=<value> (e.g. --flash_attn_type=...);
    # a field xllamacpp does not have fails the start, quoting the server's log
    extra_args: List[str] = field(default_factory=list)
    startup_timeout_s: float = bounded(300.0, gt=0)  # longest wait for the server to become healthy (model load)
    request_timeout_s: float = bounded(3600.0, gt=0)  # longest a single streaming request may take (a loaded CPU)
    log_dir: str = "outputs/servers"  # where each server's log file goes

    def pairing_blocker(self) -> Optional[str]:
        return self.single_engine_reason  # one server at a time, whatever its threads do (not the offline rule)

    def check(self, cfg) -> List[Problem]:
        problems = self.served_problems(cfg) + server_mapping.managed_prefix_problems(self.extra_args)
        if self.url is None and not cfg.dry_run and not llamacpp_config.installed():
            return [("backend", self.name, llamacpp_config.INSTALL_HINT + ", or backend.url of a running llama-server")]
        problems += self._ngram_problems(cfg.speculation) + self._override_problems(cfg.speculation)
        if self.url is None and cfg.generation.max_new_tokens >= self.n_ctx:
            allowed = (
                f"more than generation.max_new_tokens ({cfg.generation.max_new_tokens}) plus the prompt's tokens "
                "(each slot's context)"
            )
            problems.append(("backend.n_ctx", self.n_ctx, allowed))
        if cfg.speculation.draft_tp_size not in (None, 1):
            allowed = f"1 or null on backend={self.name} (no tensor parallelism)"
            problems.append(("speculation.draft_tp_size", cfg.speculation.draft_tp_size, allowed))
        if str(cfg.speculation.method) == "mtp" and (problem := _mtp_problem(cfg.model.target)):
            problems.append(problem)
        return problems

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        return server_mapping.native_config(cfg, models, llamacpp_config.machine_cores())
