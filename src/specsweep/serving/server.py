"""One managed inference server: started on a free loopback port in a process group of its own, health-waited with a
timeout, its output in a log file, and stopped as a whole group (nothing it started is left running).

A server is stopped by whoever holds it (the session slot's close callback, see `backends.served`); as a safety net
every live server is also stopped at interpreter exit, a SIGTERM outside a job (a job turns SIGTERM into a record,
job.py) exits through that path, and on Linux the server gets SIGTERM if this process dies outright.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

log = logging.getLogger(__name__)

PORT = "{port}"  # placeholder in a server command line, replaced by the free port chosen at start
STOP_GRACE_S = 20.0  # SIGTERM, then this long before SIGKILL
LOG_TAIL_LINES = 6


class ServerError(RuntimeError):
    """A server failed to start, died or misbehaved; the message is one line (cause, then the log tail)."""


@dataclass
class ServerSpec:
    """What a server is: its command line (with PORT where the port goes), its environment, where it says it is
    healthy. Two specs with the same key are interchangeable servers."""

    name: str  # "vLLM server", "mlx_lm.server"
    command: List[str]
    env: Dict[str, str] = field(default_factory=dict)  # laid over os.environ
    health_path: str = "/health"
    # (path, body) of a request sent once it is healthy, for servers that load the model on first use
    # (mlx_lm.server): the start then includes the model load, and a model that cannot load fails the start
    ready_request: Optional[tuple] = None
    startup_timeout_s: float = 600.0
    log_dir: str = "outputs/servers"

    def key(self) -> str:
        return json.dumps({"command": self.command, "env": self.env}, sort_keys=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it); the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when the process that started it dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


_LIVE: "set[ManagedServer]" = set()


def stop_all() -> None:
    """Stop every server this process started and has not stopped (interpreter exit, SIGTERM outside a job)."""
    for server in list(_LIVE):
        server.stop()


atexit.register(stop_all)


def _exit_on_sigterm() -> None:
    """SIGTERM's default action skips atexit and would leave servers running: make it an ordinary exit (143)
    unless someone (a job's recording, a launcher) already handles it."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))


class ManagedServer:
    def __init__(self, spec: ServerSpec, host: str = "127.0.0.1"):
        self.spec, self.host = spec, host
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None
        self.start_s: Optional[float] = None  # process start to healthy

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> List[str]:
        return [arg.replace(PORT, str(self.port)) for arg in self.spec.command]

    def start(self) -> None:
        """Start the process and wait until it is healthy; ServerError (and nothing left running) otherwise."""
        self.port = free_port(self.host)
        stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        self.log_path = Path(self.spec.log_dir) / f"{stamp}_{self.spec.name.replace(' ', '_')}_{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        _exit_on_sigterm()
        started = time.perf_counter()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.spec.env},
                start_new_session=True,  # its own process group: stop() reaches every process it starts
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        _LIVE.add(self)
        log.info("started %s (pid %d) on %s, log %s", self.spec.name, self.proc.pid, self.url, self.log_path)
        try:
            self._wait_healthy()
            if self.spec.ready_request is not None:
                self._first_request(*self.spec.ready_request)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - started

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.spec.startup_timeout_s
        impostor = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.error(f"exited with code {self.proc.returncode} before it was healthy{impostor}")
            try:
                healthy = httpx.get(self.url + self.spec.health_path, timeout=2.0).status_code == 200
            except httpx.HTTPError:
                healthy = False
            # the port was free when chosen, but something else may have bound it since: its answer is not ours
            if healthy and self.listens_on_port() is False:
                impostor = f" (port {self.port} was answered by a process that is not this server)"
            elif healthy:
                return
            time.sleep(0.5)
        timeout = f"was not healthy within {self.spec.startup_timeout_s:g} s (backend.startup_timeout_s){impostor}"
        raise self.error(timeout)

    def listens_on_port(self) -> Optional[bool]:
        """Whether a process of the server's group listens on its port (None: the platform does not say)."""
        import psutil

        for proc in self.group_members():
            try:
                connections = proc.net_connections(kind="tcp")
            except psutil.AccessDenied:
                return None
            except psutil.NoSuchProcess:
                continue
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port for c in connections):
                return True
        return False

    def _first_request(self, path: str, body: Dict[str, object]) -> None:
        import httpx

        try:
            response = httpx.post(self.url + path, json=body, timeout=self.spec.startup_timeout_s)
        except httpx.HTTPError as err:
            raise self.error(f"did not answer its first request ({type(err).__name__}: {err})") from None
        if response.status_code != 200:
            detail = " ".join(response.text.split())[:300]
            raise self.error(f"refused its first request (HTTP {response.status_code}: {detail})")

    def error(self, cause: str) -> ServerError:
        """One line naming the server, the cause and the tail of its log (the full tail is logged too)."""
        tail = self.log_tail()
        log.error("%s %s; its log (%s) ends:\n%s", self.spec.name, cause, self.log_path, "\n".join(tail))
        quoted = " | ".join(line[:300] for line in tail) or "(empty)"
        return ServerError(f"{self.spec.name} {cause}; log {self.log_path} ends: {quoted}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> List[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                text = f.read().decode(errors="replace")
        except (OSError, TypeError):
            return []
        return [" ".join(line.split()) for line in text.splitlines() if line.strip()][-lines:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exits_within(self, seconds: float) -> bool:
        """Whether the server process exits within `seconds` (True at once if it already has)."""
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after STOP_GRACE_S, then reap: nothing left, no zombie."""
        if self.proc is None:
            return
        _LIVE.discard(self)
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            self._signal_group(signal.SIGCONT)  # a stopped (SIGSTOP) server acts on SIGTERM only once it runs
            try:
                self.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit within %g s of SIGTERM: killing it", self.spec.name, STOP_GRACE_S)
        self._signal_group(signal.SIGKILL)  # the group can outlive its leader: helpers it started go too
        self.proc.wait()
        self._wait_group_gone()

    def _wait_group_gone(self, timeout_s: float = 10.0) -> None:
        """SIGKILL is delivered asynchronously: return once no process of the group runs (zombies aside: their
        parent, or init, reaps them)."""
        deadline = time.monotonic() + timeout_s
        while self.group_members() and time.monotonic() < deadline:
            time.sleep(0.05)

    def group_members(self) -> list:
        """Live (non-zombie) processes of the server's process group."""
        import psutil

        out = []
        for proc in psutil.process_iter(["pid", "status"]):
            try:
                if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == self.proc.pid:
                    out.append(proc)
            except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
                continue
        return out

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def peak_memory_mb(self) -> Dict[str, object]:
        """Peak resident memory of the server's processes (summed per-process peaks: an upper bound of the peak
        of the sum), from /proc's VmHWM; elsewhere their current RSS."""
        import psutil

        try:
            procs = [psutil.Process(self.proc.pid)]
            procs += procs[0].children(recursive=True)
        except (psutil.NoSuchProcess, AttributeError):
            return {"peak_memory_mb": None, "peak_memory_source": f"{self.spec.name} is not running"}
        total, source = 0.0, "VmHWM"
        for proc in procs:
            try:
                total += _vm_hwm_mb(proc.pid) if sys.platform == "linux" else proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, OSError):
                continue
        if sys.platform != "linux":
            source = "current RSS (no peak counter on this platform)"
        return {
            "peak_memory_mb": total,
            "peak_memory_source": f"{self.spec.name}: {source} of its {len(procs)} process(es), summed "
            "(host memory; GPU memory not included)",
        }


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
