"""The engine half every served backend shares: a server for this job's server configuration, and one load run per
generate() call.

A server costs a process start and a model load (tens of seconds on a small CPU), so a closed engine leaves its server
running in the session's `serving.servers` slot, and the next build whose server configuration (command line and
environment) is identical takes it over: a sweep over concurrency, request rate, max_new_tokens or (on
mlx_lm.server, which takes the draft length per request) k reuses one server. A build with any other configuration
stops the kept server first, so one server holds memory at a time; the session stops it when the process ends.
With `backend.url` set, specsweep starts nothing and measures the server there.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from specsweep.backends.base import Backend
from specsweep.core import AcceptanceCounts, Generation, Prompt
from specsweep.serving.loadgen import Record, Request, run_load
from specsweep.serving.server import ManagedServer, ServerError, ServerSpec

log = logging.getLogger(__name__)

SERVERS = "serving.servers"  # session slot: the last closed server, alive until a build needs another configuration


class ServedBackend(Backend):
    """Subclasses say what their server is (`server_spec`), what a request carries (`request_body`) and whether the
    server counts acceptance (`acceptance_reason`: None when it does, through `read_acceptance`)."""

    acceptance_reason: ClassVar[Optional[str]] = "this server exposes no acceptance counters"
    acceptance_source: ClassVar[Optional[str]] = None
    no_cost_ratio = "not measured on a served backend (timing the draft alone would start another server)"

    def __init__(self, cfg, native: Dict[str, Any], models, session):
        super().__init__(cfg, native, models, session)
        self.server: Optional[ManagedServer] = None
        self.url: Optional[str] = None
        self.reused = False
        self.before: Optional[AcceptanceCounts] = None
        self.model_id: Optional[str] = None
        self.max_failure_rate: float = cfg.measurement.max_failure_rate
        self.records: List[Record] = []  # the last load run's requests, as the client saw them
        self.failures: List[Record] = []  # those of them that failed or timed out
        self.keep = True  # False once a request timed out: a wedged server is stopped, not kept for the next job

    # --- what a served backend says about itself --------------------------------------------------------------

    def server_spec(self) -> ServerSpec:
        raise NotImplementedError

    def request_body(self, prompt: Prompt) -> Dict[str, Any]:
        """The body of one prompt's request, sampling settings included (stream settings are added by the client)."""
        raise NotImplementedError

    def read_acceptance(self) -> Optional[AcceptanceCounts]:
        """The server's cumulative acceptance counters now (None: it has none for this configuration)."""
        return None

    def output_ids(self, record: Record) -> List[int]:
        """The request's output token ids: the server's own where it returns them."""
        if record.token_ids is None:
            raise ServerError(f"{self.name}: the server returned no token ids for prompt {record.prompt_id}")
        return record.token_ids

    # --- the engine ---------------------------------------------------------------------------------------------

    def _servers(self):
        return self.session.slot(SERVERS, capacity=1, close=ManagedServer.stop)

    def load(self) -> None:
        external = self.native.get("url")  # backend.url (or baseline_url): a server specsweep does not manage
        if external:
            self.url = external.rstrip("/")
            self._check_health()
        else:
            self.server, self.reused = self._take_or_start(self.server_spec())
            self.url = self.server.url
        self.model_id = self._model_id()

    def _take_or_start(self, spec: ServerSpec):
        servers = self._servers()
        server = servers.take(spec.key())
        if server is not None and not server.alive():
            server.stop()
            server = None
        servers.clear()  # any other kept server stops before this one starts: one server holds memory at a time
        if server is not None:
            return server, True
        server = ManagedServer(spec)
        server.start()
        return server, False

    def _check_health(self) -> None:
        import httpx

        try:
            status = httpx.get(self.url + "/health", timeout=30.0).status_code
        except httpx.HTTPError as err:
            raise self._failure(f"is not reachable ({type(err).__name__}: {err})") from None
        if status != 200:
            raise self._failure(f"is not healthy (GET /health: HTTP {status})")

    def _model_id(self) -> Optional[str]:
        """The model name the server answers to (its first /v1/models entry)."""
        import httpx

        try:
            data = httpx.get(self.url + "/v1/models", timeout=30.0).json().get("data") or []
        except (httpx.HTTPError, ValueError) as err:
            raise self._failure(f"did not list its models ({type(err).__name__}: {err})") from None
        return data[0].get("id") if data else None

    def _failure(self, cause: str) -> ServerError:
        if self.server is not None:
            return self.server.error(cause)
        return ServerError(f"the server at {self.url} {cause}")

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        """One load run: every prompt is one streaming request, at most generation.concurrency in flight."""
        requests = [Request(p.id, self.native["endpoint"], self.request_body(p)) for p in prompts]
        records = run_load(
            self.url,
            requests,
            self.generation.concurrency,
            self.generation.request_rate,
            self.generation.seed,
            self.settings.request_timeout_s,
        )
        self.records = records
        self.failures = [r for r in records if r.outcome != "ok"]
        self._raise_on_failures(records)
        # latencies and throughput are the ok requests'; the others are counted beside them (window_failures)
        return [self._generation(record) for record in records if record.outcome == "ok"]

    def window_failures(self) -> List[Record]:
        return list(self.failures)

    def _raise_on_failures(self, records: List[Record]) -> None:
        """A server that died fails the job; so do more failed or timed-out requests than max_failure_rate allows
        (one line: the counts, the limit, the first reason)."""
        failed = self.failures
        if any(r.timed_out for r in failed):
            self.keep = False
        over = bool(failed) and len(failed) / len(records) > self.max_failure_rate
        # a server that dies drops its connections a moment before it can be reaped: a failing run waits for it (not
        # a tolerated one: this runs inside the timed window, and a death shows at the next run or at close)
        if self.server is not None and (not self.server.alive() or (over and self.server.exits_within(3.0))):
            raise self.server.error(f"exited with code {self.server.proc.returncode} during the load run")
        if not failed:
            return
        timed_out = sum(r.timed_out for r in failed)
        counts = f"did not complete {len(failed)} of {len(records)} requests ({len(failed) - timed_out} failed, "
        counts += f"{timed_out} timed out)"
        if over:
            limit = f"more than measurement.max_failure_rate={self.max_failure_rate:g}"
            raise self._failure(f"{counts}, {limit}; first, {failed[0].prompt_id}: {failed[0].error}")
        log.warning("%s: %s, within measurement.max_failure_rate=%g", self.name, counts, self.max_failure_rate)

    def _settled_acceptance(self) -> Optional[AcceptanceCounts]:
        """A reading taken once two in a row agree: the server records a step's counts right after streaming it.
        A /metrics that stops answering (or answers nonsense) after a good start refuses the job's acceptance."""
        try:
            reading = self.read_acceptance()
            for _ in range(10):
                if reading is None:
                    return None
                time.sleep(0.05)
                again = self.read_acceptance()
                if again is not None and again.same_totals(reading):
                    return again
                reading = again
        except ServerError as err:
            self._refuse_acceptance(str(err))
            return None
        return reading

    def _refuse_acceptance(self, reason: str) -> None:
        if self.acceptance_refused is None:
            self.acceptance_refused = f"refused: {reason}"
            log.warning("%s: acceptance %s", self.name, self.acceptance_refused)

    def begin_window(self) -> None:
        self.before = self._settled_acceptance()

    def window_acceptance(self) -> Optional[AcceptanceCounts]:
        """The counters now minus at begin_window(): the timed load run's counts (warm-up runs fall outside). None,
        with the job's acceptance refused, when a reading is missing on one side or a counter went backwards."""
        after, before = self._settled_acceptance(), self.before
        if after is None and before is None:
            return None  # no counters on either side: nothing to difference (and nothing claimed)
        if after is None or before is None:
            side = "after" if after is None else "before"
            self._refuse_acceptance(f"the server's /metrics had no spec-decode counters {side} a measurement window")
            return None
        if after.went_backwards(before):
            self._refuse_acceptance(
                "the server's spec-decode counters went backwards during a measurement window (a server restart?)"
            )
            return None
        return after - before

    def _generation(self, record: Record) -> Generation:
        ids = self.output_ids(record)
        return Generation(
            prompt_id=record.prompt_id,
            prompt_tokens=record.prompt_tokens or 0,
            output_ids=ids,
            wall_s=record.e2e_s,
            ttft_s=record.ttft_s,
            acceptance=None,  # the server counts a window, not a request (window_acceptance)
            text=record.text,
            token_count=record.completion_tokens if record.token_ids is None else None,
            itl_s=list(record.itl_s),
            queued_s=record.queued_s,
        )

    def peak_memory(self) -> Dict[str, Any]:
        if self.server is None:
            reason = f"the server at {self.url} is not managed by specsweep: its memory is not read"
            return {"peak_memory_mb": None, "peak_memory_source": reason, "peak_memory_per_device_mb": None}
        return {**self.server.peak_memory_mb(), "peak_memory_per_device_mb": None}

    def timed_batches(self, prompts: List[Prompt]) -> List[List[Prompt]]:
        """One load run over every prompt per timed call (generation.concurrency in flight)."""
        return [prompts]

    def extra_sections(self) -> Tuple[str, ...]:
        """The `serving` section: the load and per-request latencies (built by measure/serving_stats.py)."""
        return ("serving",)

    def acceptance_facts(self) -> Dict[str, Optional[str]]:
        """Where acceptance comes from, or why there is none (speculative configurations only)."""
        if self.method == "none":
            return {"acceptance_source": None, "acceptance_unavailable_reason": None}
        if self.acceptance_refused is not None:
            return {"acceptance_source": None, "acceptance_unavailable_reason": self.acceptance_refused}
        if self.acceptance_reason is not None:
            return {"acceptance_source": None, "acceptance_unavailable_reason": self.acceptance_reason}
        return {"acceptance_source": self.acceptance_source, "acceptance_unavailable_reason": None}

    def server_facts(self) -> Dict[str, Any]:
        """What every served result records about its server."""
        managed = self.server is not None
        return {
            "server_url": self.url,
            "server_managed": managed,
            "server_command": self.server.command() if managed else None,
            "server_reused": self.reused if managed else None,
            "server_start_s": None if not managed or self.reused else self.server.start_s,
            "server_log": str(self.server.log_path) if managed else None,
            "served_model": self.model_id,
        }

    def close(self) -> None:
        if self.server is None:
            return
        if self.server.alive() and self.keep:
            self._servers().put(self.server.spec.key(), self.server)
        else:
            self.server.stop()
        self.server = None
