"""The served path's machinery, shared by the served backends (`backends/served.py` and their declarations in
`backends/served_config.py`) and owned by none of them:

- `server`: one managed server process (its own process group, a free loopback port, a health wait with a timeout,
  its log file, a clean stop of the whole group);
- `loadgen`: the load generator, an async streaming OpenAI-API client on httpx (fixed concurrency, Poisson arrivals),
  one record per request;
- `prometheus`: an engine's spec-decode counters read from `/metrics` with prometheus_client's text parser;
- `openai`: the request body from the unified generation settings.

Latency percentiles and goodput are metrics like any other (measure/metrics.py and the measurement's serving
section). Nothing here imports an engine (vLLM, mlx) or the backends: a served backend names its server's command
line and its counters.
"""
