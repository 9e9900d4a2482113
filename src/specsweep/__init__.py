"""specsweep: what speculative decoding really buys, in latency, throughput and energy."""

__version__ = "0.1.0"
