"""backend=llamacpp_server's engine: llama.cpp's server as a managed server (specsweep.serving), acceptance from its
/metrics spec-decode counters, differenced around each measurement window.

The server's responses carry no token ids, so a request's output ids are its streamed text re-tokenized by the
server's own tokenizer (`/tokenize`, one keep-alive connection: under a millisecond a request here, inside the timed
window); the output token count is the server's (`usage.completion_tokens`).
"""

from __future__ import annotations

import logging
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import httpx

from specsweep.backends.llamacpp.mapping import COUNTERS
from specsweep.backends.served import ServedBackend
from specsweep.core import AcceptanceCounts, Prompt
from specsweep.serving import openai
from specsweep.serving.loadgen import Record
from specsweep.serving.prometheus import NoCounters, read_counters
from specsweep.serving.server import ServerError, ServerSpec

log = logging.getLogger(__name__)

# Inherited variables that shape llama.cpp's work (OpenMP threads, ggml's backends): part of what makes two servers
# interchangeable (ServerSpec.key).
ENGINE_ENV_PREFIXES = ("OMP_", "GGML_", "LLAMA_")
OUTPUT_IDS_FROM = "the streamed text re-tokenized by the server's own tokenizer (/tokenize): responses carry no ids"


def server_env(engine_env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The serve module imports this specsweep (PYTHONPATH: its source dir first); engine variables are listed:
    the inherited ones, then the configured ones (backend.omp_wait_policy) over them."""
    src = str(Path(__file__).resolve().parents[3])
    env = {k: v for k, v in os.environ.items() if k.startswith(ENGINE_ENV_PREFIXES)}
    env.update(engine_env or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return env


def _reported_counts(records: List[Record]) -> Tuple[int, int]:
    """(drafted, accepted) summed over the responses' own timings (a response without them counts 0)."""
    timings = [r.timings or {} for r in records]
    return sum(int(t.get("draft_n", 0)) for t in timings), sum(int(t.get("draft_n_accepted", 0)) for t in timings)


def _version(dist: str) -> Optional[str]:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


class LlamacppServerBackend(ServedBackend):
    name = "llamacpp_server"
    acceptance_reason = None
    acceptance_source = (
        "the server's /metrics: llamacpp:spec_decode_* counters, read before and after each measurement window and "
        "differenced"
    )

    def __init__(self, cfg, native: Dict[str, Any], models, session):
        super().__init__(cfg, native, models, session)
        self.http: Optional[httpx.Client] = None
        self.props: Dict[str, Any] = {}

    def server_spec(self) -> ServerSpec:
        return ServerSpec(
            name="llama.cpp server",
            command=self.native["server_command"],
            env=server_env(self.native.get("env")),
            health_path="/health",  # 200 once the model (and the draft) is loaded
            startup_timeout_s=self.settings.startup_timeout_s,
            log_dir=self.settings.log_dir,
        )

    def load(self) -> None:
        super().load()
        self.http = httpx.Client(base_url=self.url, timeout=self.settings.request_timeout_s)
        self.props = self._props()
        slots = self.props.get("total_slots")
        if isinstance(slots, int) and slots < self.generation.concurrency:
            log.warning(
                "the server at %s has %d slots: at generation.concurrency=%d requests queue inside it",
                self.url,
                slots,
                self.generation.concurrency,
            )
        if self.method != "none" and self.read_acceptance() is None:
            raise self._failure(
                "exposes no llamacpp:spec_decode_* counters on /metrics: is it serving with speculation?"
            )

    def _props(self) -> Dict[str, Any]:
        try:
            return self.http.get("/props").raise_for_status().json()
        except (httpx.HTTPError, ValueError) as err:
            cause = f"did not answer /props ({type(err).__name__}: {err}): is it a llama.cpp server?"
            raise self._failure(cause) from None

    def request_body(self, prompt: Prompt) -> Dict[str, Any]:
        body = {**self.native["request"], **openai.prompt_fields(self.native["endpoint"], prompt.text)}
        return {**body, "model": self.model_id} if self.model_id else body

    def output_ids(self, record: Record) -> List[int]:
        body = {"content": record.text, "add_special": False, "parse_special": False}
        try:
            return list(self.http.post("/tokenize", json=body).raise_for_status().json()["tokens"])
        except (httpx.HTTPError, ValueError, KeyError) as err:
            cause = f"did not tokenize prompt {record.prompt_id}'s output ({type(err).__name__}: {err})"
            raise self._failure(cause) from None

    def read_acceptance(self) -> Optional[AcceptanceCounts]:
        if self.method == "none":
            return None
        try:
            return read_counters(self.url, COUNTERS)
        except NoCounters:
            return None
        except Exception as err:
            raise ServerError(
                f"could not read {self.url}/metrics ({type(err).__name__}: {err}); llama-server serves it with "
                "--metrics"
            ) from None

    def window_acceptance(self) -> Optional[AcceptanceCounts]:
        """The /metrics window's counts, cross-checked against the sum of the window's responses' own
        timings.draft_n / draft_n_accepted: they disagree when the server also served someone else meanwhile (a
        server at backend.url), and then acceptance is refused. A window with failed requests is not checked (a
        request cut off mid-stream leaves counts in /metrics and no timings)."""
        counts = super().window_acceptance()
        if counts is None or self.failures:
            return counts
        reported = _reported_counts(self.records)
        if reported != (counts.drafted, counts.accepted):
            self._refuse_acceptance(
                f"the server's /metrics counted {counts.drafted} drafted and {counts.accepted} accepted tokens in a "
                f"window whose responses' timings report {reported[0]} and {reported[1]} (another client?)"
            )
            return None
        return counts

    def environment(self) -> Dict[str, Any]:
        params = self.native.get("params") or {}  # what specsweep started the server with (none for backend.url)
        settings = self.props.get("default_generation_settings") or {}
        return {
            "engine": "llama.cpp server" + (" (xllamacpp, a process of its own)" if self.server is not None else ""),
            "xllamacpp": _version("xllamacpp") if self.server is not None else None,
            "llama_cpp_build": self.props.get("build_info"),
            **self.server_facts(),
            "server_slots": self.props.get("total_slots"),
            "slot_n_ctx": settings.get("n_ctx"),
            "model_ftype": self.props.get("model_ftype"),
            "threads": params.get("cpuparams.n_threads"),
            "draft_threads": params.get("speculative.draft.cpuparams.n_threads"),
            "n_batch": params.get("n_batch"),
            # e.g. OMP_WAIT_POLICY: OpenMP's spin-waiting decides how llama.cpp's threads fare beside other processes
            "engine_env": {
                k: v for k, v in server_env(self.native.get("env")).items() if k.startswith(ENGINE_ENV_PREFIXES)
            }
            if self.server is not None
            else None,
            "output_ids": OUTPUT_IDS_FROM,
            "machine": platform.machine(),
        }

    def lossless_note(self) -> Optional[str]:
        if self.method == "none":
            return None
        return (
            "llama.cpp's CPU matrix kernels for quantized weights are not bit-exact between a verification batch and "
            "one-token decoding (nor between batches of different sizes, as concurrent slots make them): greedy "
            "outputs may diverge from the baseline where two tokens are near-tied"
        )

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        super().close()
