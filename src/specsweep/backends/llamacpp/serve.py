"""llama.cpp's server as a process of its own: `python -m specsweep.backends.llamacpp.serve --params '<json>'
--port N` builds `xllamacpp.CommonParams` from the plain-data mapping (the dotted fields of
`backends/llamacpp/mapping.py`, set by the offline engine's `build_params`), starts `xllamacpp.Server` listening on
the given loopback host and port (llama.cpp's whole HTTP route set: /health, /metrics, /v1/chat/completions, ...) and
serves until SIGTERM or SIGINT. Further `--<dotted field>=<value>` arguments (backend.extra_args) set other
CommonParams fields after `--params` (the value read as JSON where it parses, else as a string).

backend=llamacpp_server runs it as a managed server (specsweep.serving.server): a process of its own, so a server
that is killed, or a specsweep that dies, leaves nothing of llama.cpp in the other.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def parse(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, Dict[str, Any]]:
    """The arguments, and the extra fields (`--a.b=v` or `--a.b v`) -> value."""
    parser = argparse.ArgumentParser(prog="python -m specsweep.backends.llamacpp.serve", description=__doc__)
    parser.add_argument("--params", required=True, help="JSON object: dotted xllamacpp.CommonParams field -> value")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, rest = parser.parse_known_args(argv)
    return args, extra_fields(rest, parser)


def extra_fields(rest: List[str], parser: argparse.ArgumentParser) -> Dict[str, Any]:
    fields: Dict[str, Any] = {}
    items = iter(rest)
    for item in items:
        if not item.startswith("--") or len(item) < 3:
            parser.error(f"unrecognized argument {item!r}: extra arguments are --<CommonParams field>=<value>")
        name, has_value, value = item[2:].partition("=")
        if not has_value:
            value = next(items, None)
            if value is None:
                parser.error(f"--{name} needs a value")
        try:
            fields[name] = json.loads(value)
        except ValueError:
            fields[name] = value
    return fields


def main(argv: Optional[List[str]] = None) -> int:
    args, extra = parse(argv)
    fields = {**json.loads(args.params), **extra, "hostnames": [args.host], "port": args.port}
    # Blocked before the server starts its threads (they inherit the mask), so the stop signal reaches sigwait below
    # and never interrupts llama.cpp mid-call.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    import xllamacpp

    from specsweep.backends.llamacpp.backend import build_params

    server = xllamacpp.Server(build_params(fields))
    print(f"xllamacpp {xllamacpp.__version__}: llama.cpp server listening on {server.listening_address}", flush=True)
    print(xllamacpp.get_system_info().strip(), flush=True)
    received = signal.sigwait(STOP_SIGNALS)
    print(f"stopping on {signal.Signals(received).name}", flush=True)
    del server  # its destructor stops the HTTP and decoding threads and frees the models
    return 0


if __name__ == "__main__":
    sys.exit(main())
