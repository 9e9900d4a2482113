"""backend=mlx_server: `mlx_lm.server` under load. Never imports mlx.

The served mode of the mlx-lm backend (it shares this package's install check). The server loads the draft model
once (`--draft-model`) and takes the draft length per request (`num_draft_tokens`), so one server serves a whole k
sweep; the no-speculation baseline is the same server command without a draft model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from specsweep.backends.mlx import config as mlx_config
from specsweep.backends.mlx import server_mapping
from specsweep.backends.served_config import ServedBackendConfig
from specsweep.core import Problem
from specsweep.fields import bounded
from specsweep.models.resolve import ResolvedModels


@dataclass
class MlxServerBackendConfig(ServedBackendConfig):
    """`mlx_lm.server --model <target> --draft-model <draft>` started by specsweep on a free loopback port (or the
    server at `url`), measured with streaming requests carrying num_draft_tokens=k. It exposes no acceptance
    counters: acceptance is null, with the reason."""

    engine = "specsweep.backends.mlx.server_backend.MlxServerBackend"
    distributions = ("mlx", "mlx-lm")
    single_engine_reason = (
        "one mlx_lm.server at a time (the baseline server has no draft model, a second copy of the target)"
    )
    managed_flags = server_mapping.MANAGED_FLAGS

    name: str = "mlx_server"
    url: Optional[str] = None  # an already-running mlx_lm.server to measure (nothing is started)
    baseline_url: Optional[str] = None  # with url: the no-speculation server (no --draft-model) to pair with
    # off (--prompt-cache-size 0): repeated passes over the same prompts would otherwise skip their prefill
    prompt_cache: bool = False
    # appended verbatim to the command line; unchecked here: a flag mlx_lm.server rejects fails the start, quoting
    # its log
    extra_args: List[str] = field(default_factory=list)
    startup_timeout_s: float = bounded(600.0, gt=0)  # longest wait for the server to become healthy
    request_timeout_s: float = bounded(3600.0, gt=0)  # longest a single streaming request may take (mlx[cpu] is slow)
    log_dir: str = "outputs/servers"  # where each server's log file goes

    @classmethod
    def supported_methods(cls) -> Tuple[str, ...]:
        return ("none", "draft_model")

    def check(self, cfg) -> List[Problem]:
        problems = self.served_problems(cfg)
        speculation = cfg.speculation
        if speculation.draft_tp_size not in (None, 1):
            allowed = "1 or null on backend=mlx_server (no tensor parallelism)"
            problems.append(("speculation.draft_tp_size", speculation.draft_tp_size, allowed))
        allowed = "empty on backend=mlx_server (server flags go in backend.extra_args)"
        problems += [
            (f"speculation.backend_overrides.{key}", value, allowed)
            for key, value in speculation.backend_overrides.items()
        ]
        if self.url is None and not cfg.dry_run and not mlx_config.installed():  # last, as backend=mlx does
            problems.append(("backend", self.name, mlx_config.INSTALL_HINT + ", or backend.url of a running server"))
        return problems

    def native_config(self, cfg, models: ResolvedModels) -> Dict[str, Any]:
        return server_mapping.native_config(cfg, models)
