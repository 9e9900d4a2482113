"""The load generator: streaming OpenAI-API requests at a fixed concurrency, optionally with Poisson arrivals, one
record per request (send time, time to first token, the gaps between streamed chunks, end-to-end latency, the text,
the token ids where the server returns them, its token counts).

Why our own client and not AIPerf, GuideLLM, inference-perf or vLLM's `vllm bench serve`: see docs/serving.md
("The load generator"); in short, none co-installs with the pinned stack without changing it and hands back
per-request records we can pair by prompt, and this is a hundred lines on httpx, which the stack already has.

Timing: every time is `time.perf_counter()` in this process. A request's clock starts when it is sent (after its
arrival time and a free concurrency slot), so queueing in the client is not counted as server latency; the wait is
recorded separately (`queued_s`).

Every request ends in one of three outcomes (`Record.outcome`): ok; failed, with a one-line reason (an HTTP error
status, a response that is not an event stream, a malformed chunk, an error chunk, a broken connection, a stream that
ends before `data: [DONE]`); or timed out, when it is not done `timeout_s` after it was sent (the whole request, not
the gap between chunks: a server that trickles tokens forever is cut too). Nothing raises out of a load run and no
request waits without a bound, so a misbehaving server costs at most `timeout_s` per request slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# httpx logs every request at INFO, which Hydra's job log would then hold once per request of every load run
logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class Request:
    prompt_id: str
    path: str  # "/v1/chat/completions" or "/v1/completions"
    body: Dict[str, Any]  # stream=true and usage reporting are added here


@dataclass
class Record:
    """One request as the client saw it; `error` is set (one line) when it failed."""

    prompt_id: str
    scheduled_s: float = 0.0  # its arrival time, from the start of the load run
    queued_s: float = 0.0  # arrival to sent: waiting for a free concurrency slot
    ttft_s: Optional[float] = None  # sent to the first chunk carrying output
    e2e_s: Optional[float] = None  # sent to the end of the stream
    itl_s: List[float] = field(default_factory=list)  # gaps between consecutive chunks carrying output
    text: str = ""
    token_ids: Optional[List[int]] = None  # the server's own output ids (vLLM's return_token_ids), else None
    completion_tokens: Optional[int] = None  # the server's count (usage)
    prompt_tokens: Optional[int] = None
    error: Optional[str] = None
    timed_out: bool = False  # not done timeout_s after it was sent (error says so too)
    timings: Optional[Dict[str, Any]] = None  # the server's own per-request timings where it sends them (llama.cpp)

    @property
    def outcome(self) -> str:
        """ "ok", "failed" or "timed_out"."""
        return "timed_out" if self.timed_out else "failed" if self.error else "ok"


def arrival_offsets(n: int, request_rate: Optional[float], seed: int) -> List[float]:
    """When each request arrives, seconds from the start: a Poisson process at `request_rate` per second
    (exponential gaps, seeded), or all at 0 (as fast as the concurrency allows)."""
    if request_rate is None:
        return [0.0] * n
    rng = random.Random(seed)
    out, t = [], 0.0
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(request_rate)
    return out


def _chunk_output(chunk: Dict[str, Any]) -> tuple:
    """(text, token ids or None) a streamed chunk carries: completions put text in `text`, chat in `delta.content`."""
    text, ids = "", None
    for choice in chunk.get("choices") or []:
        text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
        if choice.get("token_ids"):
            ids = (ids or []) + list(choice["token_ids"])
    return text, ids


def _take_chunk(record: Record, chunk: Dict[str, Any], sent: float, state: Dict[str, float]) -> None:
    if chunk.get("error"):
        raise RuntimeError(f"the server reported an error mid-stream: {chunk['error']}")
    if chunk.get("timings"):
        record.timings = chunk["timings"]
    usage = chunk.get("usage")
    if usage:
        record.completion_tokens = usage.get("completion_tokens")
        record.prompt_tokens = usage.get("prompt_tokens")
    text, ids = _chunk_output(chunk)
    if not text and not ids:
        return
    now = time.perf_counter()
    if record.ttft_s is None:
        record.ttft_s = now - sent
    else:
        record.itl_s.append(now - state["last"])
    state["last"] = now
    record.text += text
    if ids is not None:
        record.token_ids = (record.token_ids or []) + ids


def _parse_chunk(data: str) -> Dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        chunk = None
    if not isinstance(chunk, dict):
        raise RuntimeError(f"malformed event-stream chunk: {' '.join(data.split())[:200]!r}")
    return chunk


async def _stream(client, url: str, request: Request, record: Record, sent: float) -> None:
    body = {**request.body, "stream": True, "stream_options": {"include_usage": True}}
    state: Dict[str, float] = {}
    async with client.stream("POST", url + request.path, json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")
            raise RuntimeError(f"HTTP {response.status_code}: {' '.join(detail.split())[:300]}")
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            # a whole JSON answer (or an error page) would parse as a stream without a single token
            raise RuntimeError(f"expected a text/event-stream response, got content type {kind or '(none)'!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                record.e2e_s = time.perf_counter() - sent
                return
            _take_chunk(record, _parse_chunk(data), sent, state)
    # a server that closes the stream early (cleanly) would otherwise pass for a short answer
    raise RuntimeError("the stream ended before data: [DONE]")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


async def _one(client, url: str, request: Request, at: float, start: float, slots, timeout_s: float) -> Record:
    import httpx

    record = Record(request.prompt_id, scheduled_s=at)
    await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
    arrived = time.perf_counter()
    async with slots:
        sent = time.perf_counter()
        record.queued_s = sent - arrived
        try:
            await asyncio.wait_for(_stream(client, url, request, record, sent), timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):  # httpx's per-read bound is the same timeout_s
            record.timed_out = True
            record.error = f"timed out: not done {timeout_s:g} s after it was sent (backend.request_timeout_s)"
        except Exception as err:  # recorded per request; the caller decides what a failed request means
            record.error = _reason(err)
    return record


async def _run(url, requests, concurrency, request_rate, seed, timeout_s) -> List[Record]:
    import httpx

    offsets = arrival_offsets(len(requests), request_rate, seed)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=min(30.0, timeout_s))  # per read; the whole request: _one's bound
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        start = time.perf_counter()
        tasks = [_one(client, url, r, at, start, slots, timeout_s) for r, at in zip(requests, offsets)]
        return list(await asyncio.gather(*tasks))


def run_load(
    url: str,
    requests: List[Request],
    concurrency: int,
    request_rate: Optional[float] = None,
    seed: int = 0,
    timeout_s: float = 600.0,
) -> List[Record]:
    """Send every request (in order of arrival), at most `concurrency` in flight; one Record each, in order, whatever
    the server does (see `Record.outcome`): each request is bounded by `timeout_s` from when it is sent."""
    return asyncio.run(_run(url, requests, concurrency, request_rate, seed, timeout_s))
