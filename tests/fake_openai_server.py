"""A stand-in OpenAI-API server for the fast tests of the served path (no model): stdlib only.

GET /health, /v1/models, /metrics (vLLM's spec-decode counters with --spec); POST /v1/chat/completions and
/v1/completions, streamed one chunk per token (two tokens per chunk with --spec, as a verification step delivers its
accepted tokens together). A prompt's output is deterministic: token i is (len(prompt) + i) % 50 + 10, text "t<id> ".

    python fake_openai_server.py --port P [--spec] [--delay S] [--die-after N] [--child] [--exit-at-start]

Faults, for the tests of a misbehaving server (tests/test_serving_faults.py):

    --fault KIND --fault-every N   every Nth request (by arrival: the Nth, 2Nth, ...) gets KIND:
        500, 429, 503        that HTTP status with a JSON error body
        malformed            one chunk of its stream is not JSON, then the stream goes on
        stall                one chunk, then nothing for --stall-s seconds (the connection stays open)
        reset                one chunk, then the connection is reset (TCP RST)
        content-type         a whole non-streaming JSON answer (application/json)
        no-done              the stream ends cleanly before `data: [DONE]`
    --bind-delay S                 sleep S seconds before binding the port (a model load)
    --health-status C              GET /health answers C (503: a server that never becomes healthy)
    --metrics KIND --metrics-after N   /metrics once N requests have arrived (before: as usual; N=0: from the start):
        missing (404), malformed (not Prometheus text), backwards (the counters restart from 0: a server restart)
    --counters-from N              the spec-decode counters start at N (a server with history), not 0

As llama.cpp's server (--llamacpp): llamacpp:spec_decode_* counter names, GET /props, POST /tokenize (the ids back
from "t<id> " text), and each response's own counts in its last chunk's `timings` (draft_n, draft_n_accepted);
--timings-skew N reports N more accepted tokens there than /metrics counts (what another client would cause).
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"requests": 0, "in_flight": 0, "max_in_flight": 0, "drafts": 0, "drafted": 0, "accepted": 0, "pos": [0, 0]}
LOCK = threading.Lock()


def metrics_text() -> str:
    lines = []
    prefix = "llamacpp" if ARGS.llamacpp else "vllm"
    for name, key in (
        (f"{prefix}:spec_decode_num_drafts", "drafts"),
        (f"{prefix}:spec_decode_num_draft_tokens", "drafted"),
        (f"{prefix}:spec_decode_num_accepted_tokens", "accepted"),
    ):
        lines += [f"# TYPE {name}_total counter", f'{name}_total{{engine="0",model_name="fake"}} {STATE[key]}.0']
    name = f"{prefix}:spec_decode_num_accepted_tokens_per_pos"
    lines.append(f"# TYPE {name}_total counter")
    for i, n in enumerate(STATE["pos"]):
        lines.append(f'{name}_total{{engine="0",model_name="fake",position="{i}"}} {n}.0')
    return "\n".join(lines) + "\n" + max_in_flight_text()


def max_in_flight_text() -> str:
    """The stand-in's own gauge: the most requests it has served at once (what a concurrency test checks)."""
    return f"# TYPE fake_max_in_flight gauge\nfake_max_in_flight {STATE['max_in_flight']}\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the log to what the tests read
        pass

    def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._send(ARGS.health_status, b"{}")
        elif self.path == "/props" and ARGS.llamacpp:
            self._send(200, json.dumps({"total_slots": 8, "build_info": "fake", "model_ftype": "fake"}).encode())
        elif self.path == "/v1/models":
            self._send(200, json.dumps({"data": [{"id": "fake-model"}]}).encode())
        elif self.path == "/metrics" and ARGS.metrics and STATE["requests"] >= ARGS.metrics_after:
            self._metrics_fault()
        elif self.path == "/metrics" and ARGS.spec:
            self._send(200, metrics_text().encode(), "text/plain")
        elif self.path == "/metrics":
            gauges = f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n{max_in_flight_text()}"
            self._send(200, gauges.encode(), "text/plain")
        else:
            self._send(404, b"{}")

    def _metrics_fault(self) -> None:
        if ARGS.metrics == "missing":
            self._send(404, b"Not Found", "text/plain")
        elif ARGS.metrics == "malformed":
            self._send(200, b"<html><body>metrics moved</body></html>", "text/html")
        else:  # backwards: what a restarted server reports, its counters from zero
            with LOCK:
                if not STATE.get("restarted"):
                    STATE.update(restarted=True, drafts=0, drafted=0, accepted=0, pos=[0, 0])
            self._send(200, metrics_text().encode(), "text/plain")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/tokenize":
            ids = [int(word[1:]) for word in body["content"].split() if word.startswith("t")]
            self._send(200, json.dumps({"tokens": ids}).encode())
            return
        with LOCK:
            STATE["requests"] += 1
            fault = ARGS.fault if ARGS.fault and STATE["requests"] % ARGS.fault_every == 0 else None
            STATE["in_flight"] += 1
            STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
            if ARGS.die_after and STATE["requests"] > ARGS.die_after:
                print(f"fake server: dying at request {STATE['requests']}", flush=True)
                sys.stdout.flush()
                import os

                os._exit(3)
        try:
            self._stream(body, fault)
        finally:
            with LOCK:
                STATE["in_flight"] -= 1

    def _stream(self, body, fault=None) -> None:
        if body.get("max_tokens") == 999:
            self._send(400, json.dumps({"error": "max_tokens=999 is refused by the fake server"}).encode())
            return
        if fault in ("500", "429", "503"):
            self._send(int(fault), json.dumps({"error": f"fake fault: HTTP {fault}"}).encode())
            return
        prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        ids = [(len(prompt) + i) % 50 + 10 for i in range(body["max_tokens"])]
        if fault == "content-type":
            text = "".join(f"t{i} " for i in ids)
            self._send(200, json.dumps({"choices": [{"index": 0, "text": text}]}).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = 2 if ARGS.spec else 1
        for start in range(0, len(ids), step):
            time.sleep(ARGS.delay)
            chunk_ids = ids[start : start + step]
            self._chunk(body, chunk_ids)
            if start == 0 and fault and self._fault_mid_stream(fault):
                return
            if ARGS.spec:
                with LOCK:  # one draft step of 2 tokens, the first accepted
                    STATE["drafts"] += 1
                    STATE["drafted"] += 2
                    STATE["accepted"] += 1
                    STATE["pos"][0] += 1
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(ids), "total_tokens": len(prompt) + len(ids)}
        last = {"choices": [], "usage": usage}
        if ARGS.llamacpp and ARGS.spec:  # the counts this request added to /metrics (plus the skew)
            steps = len(range(0, len(ids), step))
            last["timings"] = {"draft_n": 2 * steps, "draft_n_accepted": steps + ARGS.timings_skew}
        self._write(last)
        self._write_raw(b"data: [DONE]\n\n")
        self._write_raw(b"")

    def _fault_mid_stream(self, fault: str) -> bool:
        """After the first chunk: True when the stream ends here (the fault broke it)."""
        if fault == "malformed":
            self._write_raw(b'data: {"choices": [{"index": 0, "delta": {"content": "t1\n\n')
        elif fault == "stall":
            time.sleep(ARGS.stall_s)
            return True
        elif fault == "reset":  # SO_LINGER 0: close() sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return True
        elif fault == "no-done":
            self._write_raw(b"")  # the chunked body ends cleanly, without [DONE]
            self.close_connection = True
            return True
        return False

    def _chunk(self, body, chunk_ids) -> None:
        text = "".join(f"t{i} " for i in chunk_ids)
        choice = {"index": 0, "finish_reason": None}
        if "messages" in body:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        if body.get("return_token_ids"):
            choice["token_ids"] = chunk_ids
        self._write({"choices": [choice]})

    def _write(self, data) -> None:
        self._write_raw(f"data: {json.dumps(data)}\n\n".encode())

    def _write_raw(self, payload: bytes) -> None:
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--spec", action="store_true")
    parser.add_argument("--llamacpp", action="store_true")
    parser.add_argument("--timings-skew", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--child", action="store_true", help="start a sleeping helper process, as vLLM does")
    parser.add_argument("--exit-at-start", action="store_true")
    parser.add_argument("--never-healthy", action="store_true")
    kinds = ("500", "429", "503", "malformed", "stall", "reset", "content-type", "no-done")
    parser.add_argument("--fault", choices=kinds)
    parser.add_argument("--fault-every", type=int, default=1)
    parser.add_argument("--stall-s", type=float, default=600.0)
    parser.add_argument("--bind-delay", type=float, default=0.0)
    parser.add_argument("--health-status", type=int, default=200)
    parser.add_argument("--metrics", choices=("missing", "malformed", "backwards"))
    parser.add_argument("--metrics-after", type=int, default=0)
    parser.add_argument("--counters-from", type=int, default=0)
    ARGS = parser.parse_args()
    for key in ("drafts", "drafted", "accepted"):
        STATE[key] = ARGS.counters_from
    STATE["pos"] = [ARGS.counters_from, 0]
    print(f"fake server: starting on port {ARGS.port}", flush=True)
    if ARGS.exit_at_start:
        print("fake server: error: refusing to start (--exit-at-start)", flush=True)
        sys.exit(2)
    if ARGS.child:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if ARGS.never_healthy:
        time.sleep(600)
    time.sleep(ARGS.bind_delay)
    ThreadingHTTPServer((ARGS.host, ARGS.port), Handler).serve_forever()


ARGS = None
if __name__ == "__main__":
    main()
