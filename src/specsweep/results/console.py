"""The console summary a finished job prints (stderr): the headline numbers of its result, one screen."""

from __future__ import annotations

import math
import sys
from typing import Optional

from specsweep.results.types import ComparedK, Energy, Lossless, Metrics, Precision, Result, Serving


def _fmt(value, spec: str = "{:.3g}") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else spec.format(value)


def _energy_line(energy: Optional[Energy]) -> str:
    if energy is None or energy.joules is None:
        return f"  energy: n/a J ({energy.unavailable_reason if energy else 'not measured'})"
    estimated = ", estimated" if energy.estimated else ""
    return f"  energy: {_fmt(energy.joules)} J ({energy.source}{estimated})"


def _lossless_line(lossless: Optional[Lossless]) -> str:
    if lossless is None:
        return "  lossless: not checked"
    return f"  lossless: {lossless.match_rate if lossless.checked else lossless.reason}"


def _precision_line(p: Optional[Precision]) -> Optional[str]:
    """How precise the speedup is: its interval over paired rounds, and the target where one was set."""
    if p is None or p.mean is None:
        return None
    if p.half_width is None:
        line = "  precision: n/a (1 paired round; an interval needs 2: measurement.repetitions)"
    else:
        line = (
            f"  precision: {p.rounds} paired rounds, {p.confidence:.0%} CI {_fmt(p.ci_low)}-{_fmt(p.ci_high)}x "
            f"(+/-{p.half_width:.1%})"
        )
    if p.target is not None:
        line += f"; target +/-{p.target:.1%} {'met' if p.met else 'NOT met'}" + (f" ({p.note})" if p.note else "")
    return "\n".join([line, *(f"  WARNING: {warning}" for warning in p.warnings)])


def _requests_line(serving: Optional[Serving]) -> Optional[str]:
    """A served job's request accounting: its figures are the ok requests'; the others are counted here."""
    if serving is None:
        return None
    load = serving.speculative
    line = f"  requests: {load.ok_requests} ok, {load.failed_requests} failed, {load.timed_out_requests} timed out"
    if load.failure_rate:
        line += f" (failure rate {_fmt(load.failure_rate)}; first: {load.failures[0].error})"
    if serving.acceptance_unavailable_reason:
        line += f"\n  acceptance: n/a ({serving.acceptance_unavailable_reason})"
    return line


def _compared_line(compared: ComparedK) -> str:
    """One of measurement.compare_k's k values, against the same baseline in the same round robin."""
    m, p = compared.metrics, compared.paired_speedup
    line = f"  same baseline, k={compared.k}: {_fmt(m.tokens_per_s)} tok/s -> speedup {_fmt(m.speedup)}x"
    if p is not None and p.half_width is not None:
        line += f", CI {_fmt(p.ci_low)}-{_fmt(p.ci_high)}x (+/-{p.half_width:.1%})"
    return line + f", acceptance rate {_fmt(m.acceptance_rate)}"


def print_summary(result: Result) -> None:
    m = result.metrics or Metrics()
    lines = [
        f"{result.backend} {result.method} k={result.k} on {result.model}:",
        f"  {_fmt(m.tokens_per_s)} tok/s vs baseline {_fmt(m.baseline_tokens_per_s)} tok/s "
        f"-> speedup {_fmt(m.speedup)}x",
        _precision_line(result.stats.paired_speedup if result.stats else None),
        f"  acceptance rate {_fmt(m.acceptance_rate)}, mean acceptance length {_fmt(m.mean_acceptance_length)}",
        f"  TTFT {_fmt(m.ttft_s)} s, TPOT {_fmt(m.tpot_s)} s, peak memory {_fmt(m.peak_memory_mb, '{:.0f}')} MB",
        _lossless_line(result.lossless),
        _energy_line(result.energy),
        _requests_line(result.serving),
        *(_compared_line(c) for c in result.compared),
    ]
    print("\n".join(line for line in lines if line is not None), file=sys.stderr)
