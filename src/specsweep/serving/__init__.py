"""The served path, shared by the served backends (backend=vllm_server, mlx_server) and owned by none of them.

- `server`: one managed server process (its own process group, a free loopback port, a health wait with a timeout,
  its log file, a clean stop of the whole group);
- `load`: the load generator, an async streaming OpenAI-API client on httpx (fixed concurrency, Poisson arrivals),
  one record per request;
- `prometheus`: vLLM's spec-decode counters read from `/metrics` with prometheus_client's text parser;
- `engine`: the `Backend` half every served backend shares (a server kept in the session and reused by jobs with an
  identical server configuration, one load run per generate() call);
- `openai`: the request body from the unified generation settings; `config`: validation rules they share.

Latency percentiles and goodput are metrics like any other (measure/metrics.py, measure/load.py).

Nothing here imports an engine (vLLM, mlx): a served backend names its server's command line.
"""
