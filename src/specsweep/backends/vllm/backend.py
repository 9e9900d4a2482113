"""vLLM engine: each engine config runs in its own worker process (worker.py), timed inside the worker.

Building an engine costs a process start, `import vllm` and LLM() (tens of seconds on a small CPU), so the last
closed engine is kept alive in the session and handed to the next build with the identical engine config (a
baseline built right after a `speculation=none` job, or a sweep over generation settings). A build with any other
config stops the kept engine first, so at most one engine holds memory while another is built; the session stops
the kept engine when the process ends.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import specsweep
from specsweep.backends.base import Backend
from specsweep.backends.vllm.config import installed
from specsweep.core import Generation, Prompt
from specsweep.models.packaged import cache_root
from specsweep.models.resolve import ResolvedModels

log = logging.getLogger(__name__)

# An engine build (process start, `import vllm`, LLM()) gets at least this long, whatever backend.reply_timeout_s.
LOAD_TIMEOUT_S = 1800.0
# Environment variables that change what an engine is; part of the reuse key.
ENGINE_ENV_PREFIXES = ("VLLM_", "CUDA_", "OMP_", "HF_")


class VllmWorkerError(RuntimeError):
    """The engine process reported an error or died; the message is one line, the traceback is logged."""


def worker_env() -> Dict[str, str]:
    """The worker's environment: in-process engine core, and every cache under the specsweep cache unless set."""
    env = dict(os.environ)
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    root = cache_root() / "vllm"
    for name, sub in (
        ("TMPDIR", "tmp"),
        ("VLLM_CACHE_ROOT", "vllm"),
        ("TORCHINDUCTOR_CACHE_DIR", "inductor"),
        ("XDG_CACHE_HOME", "xdg"),
        ("HF_HOME", "hf"),
    ):
        if name not in env:
            (root / sub).mkdir(parents=True, exist_ok=True)
            env[name] = str(root / sub)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    src = str(Path(specsweep.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


class _Worker:
    """One engine process in a process group of its own (vLLM may start helpers), talked to over a pipe.

    Every round trip has a deadline; a process that misses it, dies or errors is stopped as a whole group and waited
    for, so nothing is left running and no zombie remains.
    """

    def __init__(self, key: str, env: Dict[str, str], timeout_s: float):
        self.key = key
        self.timeout_s = timeout_s
        self.facts: Dict[str, Any] = {}
        self.broken = False
        self.conn, child = multiprocessing.Pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "specsweep.backends.vllm.worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
            start_new_session=True,  # its own process group: stop() reaches every process it started
        )
        child.close()

    def call(self, command: str, payload: Optional[Dict[str, Any]] = None) -> Any:
        timeout_s = max(self.timeout_s, LOAD_TIMEOUT_S) if command == "load" else self.timeout_s
        try:
            self.conn.send((command, payload))
            if not self.conn.poll(timeout_s):
                self.broken = True
                self._kill_group()  # hung: no graceful close
                raise VllmWorkerError(
                    f"the vLLM engine process did not answer {command} within {timeout_s:g} s "
                    "(backend.reply_timeout_s); it was stopped"
                )
            reply = self.conn.recv()
        except (EOFError, OSError):
            self.broken = True
            code = self.proc.wait()
            raise VllmWorkerError(
                f"the vLLM engine process exited with code {code} during {command} (its output is above)"
            ) from None
        if reply[0] == "error":
            self.broken = True
            log.error("vLLM engine process traceback:\n%s", reply[2])
            raise VllmWorkerError(f"vLLM failed to {command}: {reply[1]}")
        return reply[1]

    def alive(self) -> bool:
        return not self.broken and self.proc.poll() is None

    def stop(self) -> None:
        """Ask the engine to exit; if it does not within 60 s (or is hung), kill its whole process group."""
        if self.proc.poll() is None:
            try:
                self.conn.send(("close", None))
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._kill_group()
        self.conn.close()

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group outlives its leader: helpers it started go too
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


# Session slot holding the last closed engine, alive until a build needs another config (one engine at a time).
ENGINES = "vllm.engines"


class VllmBackend(Backend):
    name = "vllm"
    step_timing = (
        "t_draft: 0 (prompt lookup); t_verify(n): vLLM's time to first token of a request of n prompt tokens and 1 "
        "output token (one forward over n new tokens plus the engine's per-step work), median of {repeats} rounds "
        "over every n after a warm-up round"
    )

    def __init__(self, cfg, native: Dict[str, Any], models: ResolvedModels, session):
        super().__init__(cfg, native, models, session)
        self.worker: Optional[_Worker] = None
        self.reused = False
        self.worker_pid: Optional[int] = None
        self.ipc_s = 0.0

    def _engines(self):
        return self.session.slot(ENGINES, capacity=1, close=_Worker.stop)

    def _key(self, env: Dict[str, str]) -> str:
        return json.dumps(
            {
                "llm_kwargs": self.native["llm_kwargs"],
                "speculative_config": self.native["speculative_config"],
                "env": {k: v for k, v in env.items() if k.startswith(ENGINE_ENV_PREFIXES)},
            },
            sort_keys=True,
            default=str,
        )

    def load(self) -> None:
        env = worker_env()
        key = self._key(env)
        engines = self._engines()
        worker = engines.take(key)
        if worker is not None and not worker.alive():
            worker.stop()
            worker = None
        engines.clear()  # any other kept engine stops before this one is built: one engine holds memory at a time
        self.reused = worker is not None
        if worker is None:
            worker = _Worker(key, env, self.settings.reply_timeout_s)
            try:
                worker.facts = worker.call(
                    "load",
                    {"llm_kwargs": self.native["llm_kwargs"], "speculative_config": self.native["speculative_config"]},
                )
            except VllmWorkerError:
                worker.stop()
                raise
        self.worker = worker
        self.worker_pid = worker.proc.pid

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        start = time.perf_counter()
        reply = self.worker.call(
            "generate",
            {
                "prompts": prompts,
                "sampling_params": self.native["sampling_params"],
                "chat_template": self.native["chat_template"],
            },
        )
        self.ipc_s += time.perf_counter() - start - reply["wall_s"]
        return reply["generations"]

    def timed_forwards(self, prompt: Prompt, n_max: int, repeats: int) -> Dict[Any, float]:
        """Timed in the worker process, which holds the engine (worker.Engine.step_costs)."""
        from specsweep.methods import method_spec

        if method_spec(self.method).cost != "free":
            raise NotImplementedError(
                f"backend=vllm runs the {self.method} proposer's forwards inside every target request, so one target "
                "forward cannot be timed apart from them in this engine (speculation=ngram can; so can backend=pytorch)"
            )
        payload = {"prompt": prompt, "n_max": n_max, "repeats": repeats, "chat_template": self.native["chat_template"]}
        return self.worker.call("step_costs", payload)

    def environment(self) -> Dict[str, Any]:
        dist = installed()
        return {
            "engine": "vllm",
            "vllm_distribution": dist[0] if dist else None,
            **self.worker.facts,
            "engine_reused": self.reused,
            # generate() time outside llm.generate: pipe, pickling, tokenizing, counter reads
            "ipc_overhead_s": self.ipc_s,
            "dtype": str(self.settings.dtype),
            "kv_cache_gib": self.settings.kv_cache_gib,
            "machine": platform.machine(),
        }

    def peak_memory(self) -> Dict[str, Any]:
        return {
            "peak_memory_mb": self.worker.call("peak_memory"),
            "peak_memory_source": "vLLM engine process peak RSS "
            "(host memory: weights and KV cache on CPU; GPU memory not included)",
            "peak_memory_per_device_mb": None,
        }

    def close(self) -> None:
        if self.worker is None:
            return
        if self.worker.alive():
            self._engines().put(self.worker.key, self.worker)
        else:
            self.worker.stop()
        self.worker = None
