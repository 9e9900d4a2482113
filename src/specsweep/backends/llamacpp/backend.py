"""llama.cpp engine: its own server in-process (`xllamacpp.Server`), one streamed request per prompt.

Counts: each request's spec-decode counters are the server's /metrics counters (drafted, accepted, verification steps,
accepted per position) read before and after it, one request in flight at a time; the request's own
`timings.draft_n` / `draft_n_accepted` must agree with them (a mismatch fails the job). Output ids: the response
carries none, so the generated text is re-tokenized by llama.cpp's own tokenizer (/tokenize on the same server).
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import httpx
import psutil

from specsweep.backends.base import Backend
from specsweep.backends.llamacpp.mapping import COUNTERS, SPEC_TYPE
from specsweep.core import AcceptanceCounts, Generation, Prompt
from specsweep.serving.prometheus import counters_from_text

# Session slot: loaded servers by their CommonParams, kept from job to job in one process (a basic-launcher sweep).
# Three fit: the baseline's, a speculative one (a phased job closes neither, so a sweep reuses both) and the draft's
# alone (the cost model times it).
SERVERS = "llamacpp.servers"
SERVER_CAPACITY = 3

OUTPUT_IDS_FROM = "the generated text re-tokenized by llama.cpp's tokenizer (/tokenize): responses carry no token ids"
TTFT_FROM = "streamed in-process (a callback per chunk): the first chunk carrying generated text"
COUNTS_FROM = (
    "per request: /metrics spec_decode counters read before and after it (one request in flight), checked against "
    "the response's timings.draft_n / draft_n_accepted"
)


logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per /tokenize call in the job's log

xllamacpp: Any = None  # imported by load_xllamacpp, under the engine's environment

# What libgomp shows (omp_display_env) for each wait policy: its spin count says which one it really runs with
# (its OMP_WAIT_POLICY line shows PASSIVE when the variable is unset too, where it spins 300,000 times).
SPINCOUNT = {"PASSIVE": "0", "ACTIVE": "30000000000"}
_preloaded = False  # libgomp.so.1 was loaded (by torch, say) before xllamacpp: it read the environment then


def _libgomp(already_loaded: bool = False) -> Any:
    """The libgomp.so.1 xllamacpp links (the one loaded under that name, if any), or None."""
    try:
        return ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD if already_loaded else ctypes.DEFAULT_MODE)
    except OSError:
        return None


def openmp_settings() -> Dict[str, str]:
    """What llama.cpp's OpenMP runs with, as it says itself (OpenMP 5.1's omp_display_env, read from stderr): the
    libgomp.so.1 xllamacpp links, whichever library loaded it first. {} where it cannot say (not libgomp)."""
    display = getattr(_libgomp(), "omp_display_env", None)  # torch's older libgomp has none
    if display is None:
        return {}
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as out:
        os.dup2(out.fileno(), 2)
        try:
            display(1)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return dict(re.findall(r"^\s*(OMP_WAIT_POLICY|GOMP_SPINCOUNT) = '([^']*)'", text, re.M))


def load_xllamacpp(env: Dict[str, str]) -> Any:
    """xllamacpp, imported with `env` (OMP_WAIT_POLICY) set for that moment only: OpenMP reads it when it is loaded,
    and the rest of the process keeps its own environment. Refused when OpenMP runs otherwise than asked (loaded
    earlier by another job or library, with other values): the engine would silently run otherwise than configured."""
    global xllamacpp, _preloaded
    if xllamacpp is None:
        _preloaded = _libgomp(already_loaded=True) is not None
        before = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            import xllamacpp as module
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        xllamacpp = module
    policy = env.get("OMP_WAIT_POLICY", "").upper()
    running = openmp_settings()
    if policy and (running.get("GOMP_SPINCOUNT") != SPINCOUNT[policy] if running else _preloaded):
        what = f"GOMP_SPINCOUNT={running['GOMP_SPINCOUNT']}" if running else "what it read before llama.cpp loaded"
        raise RuntimeError(
            f"llama.cpp's OpenMP in this process already runs with {what}, not OMP_WAIT_POLICY={policy} (it reads it "
            "once, when loaded, by an earlier job or library such as torch): run this job in a process of its own, "
            "or set OMP_WAIT_POLICY before main.py starts and backend.omp_wait_policy=null"
        )
    return xllamacpp


class CountMismatch(RuntimeError):
    """The server's /metrics counters and a response's timings disagree about one request."""


def _release(_server=None) -> None:
    """Drop an evicted server (its destructor stops its loop thread and frees the model) and hand freed heap pages
    back to the OS, so RSS tracks what a sweep really holds."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def build_params(fields: Dict[str, Any]) -> "xllamacpp.CommonParams":
    """A CommonParams with every dotted field of the native config set (speculative types from their enum names)."""
    engine = load_xllamacpp({})
    params = engine.CommonParams()
    for dotted, value in fields.items():
        *path, name = dotted.split(".")
        owner = params
        for part in path:
            owner = getattr(owner, part)
        if not hasattr(owner, name):
            raise AttributeError(f"xllamacpp {engine.__version__}: CommonParams has no field {dotted}")
        if dotted == "speculative.types":
            value = [getattr(engine.common_speculative_type, v) for v in value]
        setattr(owner, name, value)
    return params


def without_speculation(fields: Dict[str, Any], model: str, threads: Optional[int]) -> Dict[str, Any]:
    """The CommonParams fields of a plain server of `model` (the draft, timed alone), from a speculative run's."""
    plain = {key: value for key, value in fields.items() if not key.startswith("speculative.") and key != "load_mtp"}
    plain.update({"model.path": model, "speculative.types": [SPEC_TYPE + "NONE"]})
    if threads:
        plain.update({"cpuparams.n_threads": threads, "cpuparams_batch.n_threads": threads})
    return plain


class _Stream:
    """One streamed response, chunk by chunk (the server's callback): its text, when the first text arrived, its
    usage and timings (the last chunk's), or its error. Returning True would stop the request."""

    def __init__(self, chat: bool):
        self.chat = chat
        self.parts: List[str] = []
        self.first_text_at: Optional[float] = None
        self.usage: Dict[str, Any] = {}
        self.timings: Dict[str, Any] = {}
        self.error: Any = None

    def __call__(self, chunk: Dict[str, Any]) -> bool:
        if "error" in chunk or ("message" in chunk and "choices" not in chunk):
            self.error = chunk.get("error", chunk)
            return True
        for choice in chunk.get("choices", []):
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            if piece:
                if self.first_text_at is None:
                    self.first_text_at = time.perf_counter()
                self.parts.append(piece)
        self.usage = chunk.get("usage") or self.usage
        self.timings = chunk.get("timings") or self.timings
        return False

    def check(self) -> None:
        if self.error is not None:
            message = self.error.get("message", self.error) if isinstance(self.error, dict) else self.error
            raise RuntimeError(f"llama.cpp refused the request: {message}")
        if not self.usage:
            raise RuntimeError("llama.cpp's response ended without its usage chunk")


class LlamacppBackend(Backend):
    name = "llamacpp"
    step_timing = (
        "t_verify(n): llama.cpp's own prompt timing (timings.prompt_ms) of n new tokens after the first prompt's "
        "cached context, one request each (max_tokens=1), on a server of the target alone; t_draft: the same for 1 "
        "token on a server of the draft model alone; median of {repeats} rounds after one warm-up round"
    )

    def __init__(self, cfg, native: Dict[str, Any], models, session):
        super().__init__(cfg, native, models, session)
        load_xllamacpp(native.get("env", {}))
        self.server: Any = None
        self.http: Optional[httpx.Client] = None
        self.props: Dict[str, Any] = {}
        self.chat = self.generation.chat_template

    def _servers(self):
        return self.session.slot(SERVERS, capacity=SERVER_CAPACITY, close=_release)

    def _server(self, fields: Dict[str, Any]):
        key = json.dumps(fields, sort_keys=True)
        return self._servers().get_or_create(key, lambda: xllamacpp.Server(build_params(fields)))

    def load(self) -> None:
        self.server = self._server(self.native["params"])
        # The in-process server also listens on 127.0.0.1 (a free port): its tokenizer and props are read there.
        self.http = httpx.Client(base_url=self.server.listening_address, timeout=120)
        self.props = self.http.get("/props").json()

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        return [self._generate_one(p) for p in prompts]

    def _body(self, prompt: Prompt) -> Dict[str, Any]:
        body = {**self.native["request"], "stream": True, "stream_options": {"include_usage": True}}
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        return body

    def _generate_one(self, prompt: Prompt) -> Generation:
        counting = self.method != "none"
        before = self._counters() if counting else None
        stream = _Stream(self.chat)
        handle = self.server.handle_chat_completions if self.chat else self.server.handle_completions
        start = time.perf_counter()
        handle(self._body(prompt), stream)
        end = time.perf_counter()
        stream.check()
        text = "".join(stream.parts)
        return Generation(
            prompt_id=prompt.id,
            prompt_tokens=int(stream.usage.get("prompt_tokens", 0)),
            output_ids=self.tokenize(text),
            wall_s=end - start,
            ttft_s=(stream.first_text_at - start) if stream.first_text_at is not None else None,
            acceptance=self._acceptance(before, stream.timings) if before is not None else None,
            text=text,
            token_count=int(stream.usage.get("completion_tokens", 0)),
        )

    def _counters(self, server=None) -> AcceptanceCounts:
        text = (server or self.server).handle_metrics()
        return counters_from_text(text.decode() if isinstance(text, bytes) else text, COUNTERS)

    def _acceptance(self, before: AcceptanceCounts, timings: Dict[str, Any]) -> AcceptanceCounts:
        counts = self._counters() - before
        reported = (int(timings.get("draft_n", 0)), int(timings.get("draft_n_accepted", 0)))
        if reported != (counts.drafted, counts.accepted):
            raise CountMismatch(
                f"llama.cpp's counts of one request disagree: /metrics counted {counts.drafted} drafted and "
                f"{counts.accepted} accepted tokens, the response's timings {reported[0]} and {reported[1]}"
            )
        return counts

    def tokenize(self, text: str, special: bool = False) -> List[int]:
        """Token ids of `text` by the loaded model's own tokenizer (BOS and special-token text only if `special`)."""
        body = {"content": text, "add_special": special, "parse_special": special}
        return list(self.http.post("/tokenize", json=body).raise_for_status().json()["tokens"])

    def encode(self, prompt: Prompt) -> List[int]:
        """The prompt's token ids as the server sees them (its chat template applied when asked)."""
        text = prompt.text
        if self.chat:
            messages = [{"role": "user", "content": prompt.text}]
            text = self.http.post("/apply-template", json={"messages": messages}).raise_for_status().json()["prompt"]
        return self.tokenize(text, special=True)

    # --- the cost model's timed forwards -----------------------------------------------------------------------

    def forward_timers(self, prompt: Prompt, n_max: int) -> Dict[Any, Callable[[], float]]:
        """Timed on servers of the target alone (the baseline's, kept in the session) and of the draft alone: on the
        speculative server a prompt's tokens also go through the draft model, which prompt_ms would include."""
        context = self.encode(prompt)
        params = self.native["params"]
        target = self._server(without_speculation(params, self.models.target, None))
        timers: Dict[Any, Callable[[], float]] = {
            n: self._prompt_timer(target, context, n) for n in range(1, n_max + 1)
        }
        if self.method == "draft_model":
            draft = self._server(without_speculation(params, self.models.draft, self.settings.draft_threads))
            timers["draft"] = self._prompt_timer(draft, context, 1)
        return timers

    def _prompt_timer(self, server, context: List[int], n: int) -> Callable[[], float]:
        """A callable timing one forward over n new tokens after `context`, which the server keeps cached between
        calls: llama.cpp's own prompt_ms of a request whose prompt is the context plus n tokens not sent before (a
        new first token each call, so the cached prefix ends at the context; which tokens does not change the cost).
        A token that happens to equal the one generated last time would be cached too: then the next one is tried."""
        markers = iter(range(1000 + n, 10**6, 7))
        body = {"max_tokens": 1, "temperature": 0.0, "top_k": 1, "cache_prompt": True, "stream": False}

        def timed() -> float:
            for _ in range(3):
                response = server.handle_completions({**body, "prompt": context + [next(markers)] * n})
                timings = response.get("timings") or {}
                if timings.get("prompt_n") == n:
                    return float(timings["prompt_ms"]) / 1000
            raise RuntimeError(
                f"timing {n} new token(s): llama.cpp processed {timings.get('prompt_n')} (its cache did not hold "
                f"the context): {str(response)[:200]}"
            )

        server.handle_completions({**body, "prompt": context})  # cache the context
        return timed

    # --- facts -------------------------------------------------------------------------------------------------

    def environment(self) -> Dict[str, Any]:
        params = self.native["params"]
        used = _features(xllamacpp.get_system_info())
        return {
            "engine": "llama.cpp (xllamacpp, in-process server)",
            "xllamacpp": xllamacpp.__version__,
            "xllamacpp_revision": xllamacpp._version.get_versions().get("full-revisionid"),
            "llama_cpp_build": self.props.get("build_info"),
            "llama_cpp_build_info": dict(xllamacpp.BUILD_INFO),
            "system_info": xllamacpp.get_system_info().strip(),
            "cpu_features_used": used,
            "cpu_features_unused": _unused_cpu_features(used),
            "threads": params.get("cpuparams.n_threads"),
            "draft_threads": params.get("speculative.draft.cpuparams.n_threads"),
            "n_ctx": params.get("n_ctx"),
            "n_batch": params.get("n_batch"),
            "openmp": openmp_settings() or None,  # as libgomp reports it: its wait policy and spin count
            "model_ftype": self.props.get("model_ftype"),
            "output_ids": OUTPUT_IDS_FROM,
            "ttft": TTFT_FROM,
            "acceptance_counts": COUNTS_FROM if self.method != "none" else None,
            "server_loads": sum(self._servers().created.values()),
            "machine": platform.machine(),
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
        }

    def lossless_note(self) -> Optional[str]:
        if self.method == "none":
            return None
        return (
            "llama.cpp's CPU matrix kernels for quantized weights are not bit-exact between a verification batch and "
            "one-token decoding: greedy outputs may diverge from the baseline where two tokens are near-tied"
        )

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
        self.server = self.http = None  # the server itself stays in the session slot for later jobs


def _features(system_info: str) -> List[str]:
    """The CPU features llama.cpp was built to use, from its system info ("CPU : SSE3 = 1 | AVX = 1 | ...")."""
    found = []
    for item in system_info.replace("CPU :", "|").split("|"):
        name, _, value = item.partition("=")
        if value.strip() == "1":
            found.append(name.strip())
    return found


def _unused_cpu_features(used: List[str]) -> Optional[List[str]]:
    """SIMD extensions this CPU has that the build does not use (Linux /proc/cpuinfo; None elsewhere): what a
    source build with -march=native could add."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), []
    )
    wanted = ("avx512", "avx_vnni", "amx", "avx512_bf16", "avx512_vnni")
    used_lower = {u.lower() for u in used}
    return sorted({f for f in flags if f.startswith(wanted) and f not in used_lower})
