"""The result of one job: what result.json holds, as types, with one serializer (`Result.to_dict`).

Every field of every section is always written; a value that is unknown or does not apply is null, never 0. Each
field's `doc(...)` is its meaning: docs/result.schema.json and the README's contract table are generated from these
types (scripts/result_schema.py), so they cannot drift from what is written.

`IDENTITY_FIELDS` is the one list of what identifies a job (what ran); the sweep-table row, the W&B config and the
report's series are all derived from it.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Literal, Optional, Sequence

from specsweep.results.redact import redact, redact_overrides
from specsweep.results.store import clean

Status = Literal["running", "ok", "failed", "interrupted"]

# What identifies a job: its config hash, and the settings a reader compares jobs by.
IDENTITY_FIELDS = (
    "config_hash",
    "backend",
    "method",
    "k",
    "ngram_min",
    "ngram_max",
    "synthetic_acceptance",
    "k_schedule",
    "concurrency",
    "request_rate",
    "model",
    "dataset",
    "overrides",
)
# The summary row's picks from the energy and stats sections.
ROW_ENERGY = (
    "joules",
    "joules_per_token",
    "joules_per_accepted_token",
    "energy_ratio",
    "source",
    "estimated",
    "unavailable_reason",
)
ROW_STATS = ("speedup", "tokens_per_s", "paired_speedup")


def doc(meaning: str, **kwargs) -> Any:
    """A dataclass field with its meaning (the field's description in the generated JSON Schema)."""
    return field(metadata={"description": meaning}, **kwargs)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass(kw_only=True)
class Metrics:
    """Headline numbers of the speculative phase, paired with its baseline; acceptance counts summed over every
    repetition and prompt."""

    tokens_per_s: Optional[float] = doc("output tokens / wall seconds over every timed batch", default=None)
    wall_s: Optional[float] = doc("seconds spent in timed generate calls", default=None)
    output_tokens: Optional[int] = doc("tokens generated in the timed batches", default=None)
    ttft_s: Optional[float] = doc("median time to first token, seconds", default=None)
    tpot_s: Optional[float] = doc("median time per output token after the first, seconds", default=None)
    baseline_tokens_per_s: Optional[float] = doc("the no-speculation baseline's tokens/s", default=None)
    baseline_wall_s: Optional[float] = doc("the baseline's seconds in timed generate calls", default=None)
    speedup: Optional[float] = doc("tokens_per_s / baseline_tokens_per_s", default=None)
    acceptance_rate: Optional[float] = doc("accepted / drafted tokens", default=None)
    mean_acceptance_length: Optional[float] = doc(
        "1 + accepted / num_drafts: tokens per verification step, bonus token included", default=None
    )
    acceptance_per_position: List[float] = doc(
        "item i: P(draft token i+1 accepted | a draft step); empty when nothing was drafted", default_factory=list
    )
    acceptance_per_position_conditional: List[Optional[float]] = doc(
        "item i: P(draft token i+1 accepted | tokens 1..i accepted); a step that drafted fewer tokens counts as not "
        "accepted (a lower bound where drafts vary in length); null where no step got that far",
        default_factory=list,
    )
    drafted_tokens: Optional[int] = doc("draft tokens proposed", default=None)
    accepted_tokens: Optional[int] = doc("draft tokens accepted", default=None)
    num_drafts: Optional[int] = doc("draft (verification) steps", default=None)
    peak_memory_mb: Optional[float] = doc("peak memory, MiB, as peak_memory_source reads it", default=None)
    peak_memory_source: Optional[str] = doc("what peak_memory_mb measures and how", default=None)
    peak_memory_per_device_mb: Optional[Dict[str, float]] = doc(
        "peak memory per device, MiB (null when the engine cannot tell devices apart)", default=None
    )


@dataclass(kw_only=True)
class Spread:
    """The spread of one per-generation quantity: median and mean with a percentile-bootstrap interval of the
    median (null below 3 values)."""

    n: int = doc("values (generations or prompts) it is computed over")
    median: Optional[float] = doc("median", default=None)
    mean: Optional[float] = doc("mean", default=None)
    ci_low: Optional[float] = doc("lower bound of the median's confidence interval", default=None)
    ci_high: Optional[float] = doc("upper bound of the median's confidence interval", default=None)
    confidence: Optional[float] = doc("the interval's confidence level (null when n = 0)", default=None)


@dataclass(kw_only=True)
class Precision:
    """How precisely the speedup was measured: each repetition is a paired round over every prompt, and the interval
    is the Student-t interval of the rounds' mean speedup (measure/precision.py)."""

    rounds: int = doc("paired rounds (repetitions) measured on both sides")
    round_speedups: List[float] = doc("speedup of each round: its tokens/s over its baseline's")
    mean: Optional[float] = doc("mean of the rounds' speedups", default=None)
    ci_low: Optional[float] = doc("lower bound of the mean's interval (null below 2 rounds)", default=None)
    ci_high: Optional[float] = doc("upper bound of the mean's interval (null below 2 rounds)", default=None)
    half_width: Optional[float] = doc(
        "the interval's half-width relative to the mean (null below 2 rounds)", default=None
    )
    confidence: float = doc("the interval's confidence level (measurement.confidence)")
    target: Optional[float] = doc(
        "measurement.target_ci: the half-width asked for (null: fixed repetitions)", default=None
    )
    met: Optional[bool] = doc("whether half_width reached the target (null without one)", default=None)
    note: Optional[str] = doc("why rounds were not added toward the target (phased pairing), if so", default=None)
    warnings: List[str] = doc(
        "signs of a disturbed job: a side whose throughput varied between rounds by more than 20%", default_factory=list
    )


@dataclass(kw_only=True)
class Stats:
    """Spreads over generations (tokens/s, TTFT, TPOT) and over prompts (speedup)."""

    tokens_per_s: Spread = doc("tokens/s of each speculative generation")
    ttft_s: Spread = doc("time to first token of each speculative generation, seconds")
    tpot_s: Spread = doc("time per output token of each speculative generation, seconds")
    speedup: Optional[Spread] = doc("per-prompt speedup (null without a baseline)", default=None)
    baseline_tokens_per_s: Optional[Spread] = doc("tokens/s of each baseline generation", default=None)
    paired_speedup: Optional[Precision] = doc(
        "the speedup per paired round and its interval (null without a baseline)", default=None
    )


@dataclass(kw_only=True)
class PromptRow:
    """One prompt: its first repetition's output, and medians over repetitions."""

    id: str = doc("prompt id")
    category: str = doc("prompt category")
    prompt_tokens: Optional[int] = doc("tokens in the (templated) prompt", default=None)
    output_tokens: Optional[int] = doc("tokens generated", default=None)
    tokens_per_s: Optional[float] = doc("median tokens/s over repetitions", default=None)
    acceptance_rate: Optional[float] = doc("accepted / drafted tokens for this prompt", default=None)
    mean_acceptance_length: Optional[float] = doc("1 + accepted / num_drafts for this prompt", default=None)
    baseline_tokens_per_s: Optional[float] = doc("the baseline's median tokens/s on this prompt", default=None)
    speedup: Optional[float] = doc("tokens_per_s / baseline_tokens_per_s", default=None)
    compared_to_baseline: bool = doc(
        "the output was compared token for token with the baseline's (greedy decoding with a baseline)", default=False
    )
    first_mismatch: Optional[int] = doc(
        "index of the first token that differs from the baseline's output; null when they match or were not compared",
        default=None,
    )
    output_text: Optional[str] = doc("the generated text", default=None)


@dataclass(kw_only=True)
class Mismatch:
    """A prompt whose greedy output differs from the baseline's."""

    id: str = doc("prompt id")
    first_mismatch: int = doc("index of the first differing token")


@dataclass(kw_only=True)
class Lossless:
    """Whether greedy speculative outputs equal the baseline's token for token (speculative decoding promises it)."""

    checked: bool = doc("the check ran")
    match_rate: Optional[float] = doc("share of compared prompts whose outputs match exactly", default=None)
    reason: Optional[str] = doc("why it was not checked", default=None)
    prompts: Optional[int] = doc("prompts compared", default=None)
    mismatches: Optional[List[Mismatch]] = doc("the prompts that differ (null when not checked)", default=None)
    note: Optional[str] = doc("why outputs may legitimately differ (e.g. a dtype that is not bit-exact)", default=None)


@dataclass(kw_only=True)
class Windows:
    """The energy measurement windows of one phase (one per timed generate call), against the counter's update
    period."""

    count: int = doc("windows")
    seconds: float = doc("their total length, seconds")
    shortest_s: Optional[float] = doc("the shortest window, seconds", default=None)
    counter_update_s: Optional[float] = doc("the energy counter's update period, seconds (null: unknown)", default=None)
    shorter_than_update: Optional[int] = doc("windows shorter than the update period", default=None)
    short_window_handling: Optional[str] = doc("how the meter handles windows shorter than that", default=None)


@dataclass(kw_only=True)
class IdleCorrected:
    """Energy minus idle power x window time (null with `unavailable_reason` when there is no idle baseline)."""

    joules: Optional[float] = doc("idle-corrected joules of the speculative phase", default=None)
    unavailable_reason: Optional[str] = doc("why joules is null", default=None)
    per_device: Optional[Dict[str, float]] = doc("idle-corrected joules per device", default=None)
    joules_per_token: Optional[float] = doc("joules / output tokens", default=None)
    joules_per_accepted_token: Optional[float] = doc("joules / accepted draft tokens", default=None)
    idle_watts: Optional[Dict[str, float]] = doc("idle power per device, watts", default=None)
    idle_seconds: Optional[float] = doc("how long idle power was measured, seconds", default=None)
    idle_source: Optional[str] = doc("where the idle power comes from (measured in this job, or cached)", default=None)
    estimated: Optional[bool] = doc("the energy or the idle power is an estimate", default=None)
    baseline_joules: Optional[float] = doc("idle-corrected joules of the baseline phase", default=None)
    baseline_joules_per_token: Optional[float] = doc("baseline_joules / baseline output tokens", default=None)
    energy_ratio: Optional[float] = doc("joules_per_token / baseline_joules_per_token", default=None)


@dataclass(kw_only=True)
class Energy:
    """Energy of the speculative phase and its baseline, summed over their measurement windows (null with a reason
    when nothing could measure it)."""

    joules: Optional[float] = doc("joules of the speculative phase", default=None)
    per_device: Optional[Dict[str, float]] = doc(
        "joules per device (gpu / cpu / dram, as the meter names them)", default=None
    )
    joules_per_token: Optional[float] = doc("joules / output tokens", default=None)
    joules_per_accepted_token: Optional[float] = doc("joules / accepted draft tokens", default=None)
    joules_per_accepted_token_reason: Optional[str] = doc("why joules_per_accepted_token is null", default=None)
    source: Optional[str] = doc("the meter (zeus-nvml, zeus-rapl, codecarbon-estimate, ...)", default=None)
    estimated: bool = doc("the figures are an estimate, not a counter reading", default=False)
    unavailable_reason: Optional[str] = doc("why joules is null", default=None)
    not_measured: Dict[str, str] = doc("devices the meter could not read, with why", default_factory=dict)
    windows: Optional[Windows] = doc("the speculative phase's measurement windows", default=None)
    baseline_joules: Optional[float] = doc("joules of the baseline phase", default=None)
    baseline_per_device: Optional[Dict[str, float]] = doc("baseline joules per device", default=None)
    baseline_joules_per_token: Optional[float] = doc("baseline joules / baseline output tokens", default=None)
    baseline_windows: Optional[Windows] = doc(
        "the baseline phase's measurement windows (null: no baseline)", default=None
    )
    energy_ratio: Optional[float] = doc("joules_per_token / baseline_joules_per_token", default=None)
    baseline_unavailable_reason: Optional[str] = doc("why baseline_joules is null, when a baseline ran", default=None)
    idle_corrected: Optional[IdleCorrected] = doc("the same figures with idle power subtracted", default=None)
    meter_error: Optional[str] = doc(
        "an error the energy meter raised when it was closed (the figures above were read before it)", default=None
    )


@dataclass(kw_only=True)
class BaselineInfo:
    """Where the no-speculation baseline this job is paired with comes from."""

    measured: bool = doc("the job has a baseline")
    measured_in_job: bool = doc("it was measured in this job (not reused)")
    key: Optional[str] = doc("hash of everything a baseline depends on; equal keys are interchangeable", default=None)
    source: Optional[str] = doc("measured in this job, or reused from earlier in this process", default=None)
    pairing: Optional[str] = doc(
        "interleaved (baseline and speculative generations alternate per prompt and repetition) or phased "
        "(all baseline generations, then all speculative ones)",
        default=None,
    )
    pairing_reason: Optional[str] = doc("why this pairing was used", default=None)
    native_differences: Optional[Dict[str, Any]] = doc(
        "every native engine config field where the baseline's engine differs from the speculative one's, "
        "{path: {speculative, baseline}}: the speculation settings and anything else that must differ",
        default=None,
    )


@dataclass(kw_only=True)
class Timing:
    """Where the job's time went, seconds."""

    load_s: Optional[float] = doc("loading the speculative engine", default=None)
    generation_s: Optional[float] = doc("measuring: warm-up and repetitions of this job's phases", default=None)
    baseline_load_s: Optional[float] = doc("loading the baseline engine (null: reused or none)", default=None)
    cost_ratio_s: Optional[float] = doc("timing the draft for the cost ratio (null: cached or none)", default=None)
    cost_model_s: Optional[float] = doc("timing the forwards of the cost model (measurement.cost_model)", default=None)


@dataclass(kw_only=True)
class CurvePoint:
    """One k of the predicted curve."""

    k: int = doc("draft tokens per step")
    tokens_per_step: float = doc("expected tokens per verification step at k (steps without a draft yield 1)")
    speedup: float = doc("predicted speedup: E(k) t_verify(1) / (k t_draft + t_verify(k+1)), per step")
    iid_speedup: Optional[float] = doc("Leviathan's i.i.d. prediction at the fitted alpha and c", default=None)
    joules_per_token: Optional[float] = doc("predicted J/token (null: energy was not measured)", default=None)


@dataclass(kw_only=True)
class CostCurve:
    """Speedup vs k predicted from one measured run at probe_k (measurement.cost_model=true): the measured
    per-position acceptance gives E(k) for every k <= probe_k, timed forwards give the step time."""

    probe_k: int = doc("the k this job ran with (the probe)")
    verify_s: List[float] = doc(
        "t_verify(n): time of one target forward over n new tokens, n = 1..probe_k+1, non-decreasing (how: source)"
    )
    draft_token_s: float = doc("t_draft: one draft forward of one token on a cached prompt (0: prompt lookup)")
    draft_step_share: float = doc("share of verification steps that carried a draft (prompt lookup misses some)")
    points: List[CurvePoint] = doc("the predicted curve, k = 1..probe_k")
    best_k: int = doc("the k with the highest predicted speedup")
    best_speedup: float = doc("its predicted speedup")
    best_energy_k: Optional[int] = doc("the k with the lowest predicted J/token (null: energy not measured)")
    source: str = doc("how the costs were timed")
    tokens_source: str = doc("how tokens per draft step at each k were obtained from the probe")
    timeline: Optional[Dict[str, float]] = doc(
        "what turns the per-step speedup into the whole-generation one tokens/s measures: tokens per generation, "
        "the baseline's TTFT and TPOT, the probe's TTFT and TPOT (null: per-step speedup)",
        default=None,
    )


@dataclass(kw_only=True)
class Theory:
    """Leviathan et al. (2023), i.i.d. acceptance: measured alpha and cost ratio c in, `predicted_*` out."""

    model: str = doc("the theory the predictions come from")
    k: Optional[int] = doc("draft tokens per step (null: the method has no fixed k)", default=None)
    alpha: Optional[float] = doc("per-token acceptance probability fitted to the counts", default=None)
    alpha_estimator: str = doc("how alpha is fitted", default="")
    acceptance_rate: Optional[float] = doc("accepted / drafted (not alpha)", default=None)
    mean_draft_length: Optional[float] = doc("drafted / num_drafts", default=None)
    cost_ratio: Optional[float] = doc("c: draft step time / target step time", default=None)
    cost_ratio_source: Optional[str] = doc("how c was obtained, or why it is null", default=None)
    draft_tpot_s: Optional[float] = doc("the draft's median time per token when timed alone, seconds", default=None)
    target_tpot_s: Optional[float] = doc("the baseline's median time per token, seconds", default=None)
    measured_tokens_per_step: Optional[float] = doc("metrics.mean_acceptance_length", default=None)
    measured_speedup: Optional[float] = doc("metrics.speedup", default=None)
    predicted_tokens_per_step: Optional[float] = doc("E[tokens per step] at this alpha and k", default=None)
    predicted_speedup: Optional[float] = doc("expected speedup at this alpha, k and c", default=None)
    predicted_best_k: Optional[int] = doc("the k with the best predicted speedup (null: no optimum)", default=None)
    predicted_best_speedup: Optional[float] = doc("predicted speedup at the best k searched", default=None)
    note: str = doc("why a prediction is missing, or what limits it", default="")
    curve: Optional[CostCurve] = doc(
        "speedup vs k from the measured per-position acceptance and timed forwards (measurement.cost_model=true)",
        default=None,
    )
    curve_note: Optional[str] = doc("why curve is null although measurement.cost_model=true", default=None)


MAX_FAILURES_LISTED = 10  # LoadStats.failures: enough to see the pattern, not a copy of a large run's log


@dataclass(kw_only=True)
class Percentiles:
    """Percentiles of one per-request (or per-gap) latency, seconds (null where n = 0)."""

    n: int = doc("values it is computed over")
    mean: Optional[float] = doc("mean", default=None)
    p50: Optional[float] = doc("median", default=None)
    p90: Optional[float] = doc("90th percentile", default=None)
    p99: Optional[float] = doc("99th percentile", default=None)


@dataclass(kw_only=True)
class RequestFailure:
    """A request of a measured load run that did not end well."""

    prompt_id: str = doc("its prompt")
    outcome: str = doc(
        "failed (an HTTP error, a broken or malformed stream, ...) or timed_out (backend.request_timeout_s)"
    )
    error: str = doc("what went wrong, one line")


@dataclass(kw_only=True)
class LoadStats:
    """One phase of a served job under load, over every measured load run (repetitions x prompts requests). Latency
    and throughput figures are over the ok requests; the others are counted beside them."""

    requests: int = doc("requests sent in the measured load runs: ok + failed + timed out")
    ok_requests: int = doc("requests answered in full (the figures below are theirs)")
    failed_requests: int = doc(
        "requests that failed: an HTTP error status, a response that is not an event stream, "
        "a malformed or error chunk, a broken connection, a stream ended before [DONE]"
    )
    timed_out_requests: int = doc("requests not done backend.request_timeout_s after they were sent")
    failure_rate: Optional[float] = doc(
        "(failed + timed out) / requests (null: no requests); the job fails above measurement.max_failure_rate",
        default=None,
    )
    failures: List[RequestFailure] = doc(
        f"the first {MAX_FAILURES_LISTED} requests that failed or timed out", default_factory=list
    )
    duration_s: float = doc("wall seconds of the measured load runs (first request sent to last response ended)")
    request_throughput: Optional[float] = doc("ok requests / duration_s", default=None)
    output_throughput: Optional[float] = doc("output tokens / duration_s (= metrics.tokens_per_s)", default=None)
    mean_concurrency: Optional[float] = doc(
        "achieved concurrency: the requests' end-to-end seconds summed / duration_s", default=None
    )
    ttft_s: Percentiles = doc("time to first token per request: sent to the first chunk carrying output")
    itl_s: Percentiles = doc(
        "inter-token latency: gaps between consecutive streamed chunks carrying output (a chunk may carry several "
        "tokens: a verification step's accepted tokens arrive together)"
    )
    tpot_s: Percentiles = doc("time per output token after the first, per request: (e2e - ttft) / (tokens - 1)")
    e2e_s: Percentiles = doc("end-to-end latency per request: sent to the end of its stream")
    queued_s: Percentiles = doc("per request: its arrival to being sent (waiting for a free concurrency slot)")
    goodput: Optional[float] = doc(
        "requests per second that met both limits (measurement.slo_ttft_s, slo_tpot_s); null when neither is set",
        default=None,
    )
    goodput_fraction: Optional[float] = doc(
        "share of requests that met both limits (failed and timed-out requests met none)", default=None
    )


@dataclass(kw_only=True)
class Serving:
    """A served job (vllm_server, mlx_server, llamacpp_server): the load it ran under and the per-request latencies
    of its phase and of its baseline at the same load."""

    concurrency: int = doc("most requests in flight at once (generation.concurrency)")
    request_rate: Optional[float] = doc("Poisson arrival rate, requests/s (null: as fast as the concurrency allows)")
    endpoint: str = doc("the OpenAI-API path every request went to")
    slo_ttft_s: Optional[float] = doc("goodput's TTFT limit, seconds (null: none)", default=None)
    slo_tpot_s: Optional[float] = doc("goodput's TPOT limit, seconds (null: none)", default=None)
    speculative: LoadStats = doc("this job's phase")
    baseline: Optional[LoadStats] = doc(
        "the no-speculation server under the same load (null: no baseline)", default=None
    )
    acceptance_source: Optional[str] = doc("where the acceptance counts come from", default=None)
    acceptance_unavailable_reason: Optional[str] = doc(
        "why acceptance is null for a speculative job on this server", default=None
    )


@dataclass(kw_only=True)
class ComparedK:
    """Another k measured in the job's interleaved round robin, against the same baseline (measurement.compare_k)."""

    k: int = doc("draft tokens per step of this engine")
    metrics: Metrics = doc("its headline numbers, paired with the job's baseline")
    paired_speedup: Optional[Precision] = doc("its speedup per round and their interval", default=None)
    lossless: Optional[Lossless] = doc("its greedy outputs against the baseline's", default=None)


@dataclass(kw_only=True)
class MeasuredSections:
    """What `measure.runner.run` measures: the sections of result.json it fills."""

    metrics: Metrics
    stats: Stats
    per_prompt: List[PromptRow]
    lossless: Lossless
    energy: Energy
    baseline: Optional[BaselineInfo] = None
    timing: Optional[Timing] = None
    environment: Optional[Dict[str, Any]] = None
    theory: Optional[Theory] = None
    serving: Optional[Serving] = None
    compared: List[ComparedK] = field(default_factory=list)


def schedule_text(schedule: Dict[int, int]) -> Optional[str]:
    """speculation.k_schedule as result.json names it: '1:4,4:2,8:0' (None: no schedule)."""
    return ",".join(f"{start}:{schedule[start]}" for start in sorted(schedule)) or None


@dataclass(kw_only=True)
class Result:
    """result.json: one job of a run or sweep. A failed job keeps every section it got to (null: not reached)."""

    status: Status = doc(
        "ok, failed, or interrupted (Ctrl-C, SIGTERM); running: not finished, or killed before it could say so"
    )
    error: Optional[str] = doc("one line, when status is failed or interrupted")
    config_hash: str = doc("hash of the resolved config (what reruns are keyed by)")
    backend: str = doc("engine backend")
    method: str = doc("speculation method")
    k: Optional[int] = doc("draft tokens per step (speculation.num_speculative_tokens)")
    ngram_min: Optional[int] = doc("shortest n-gram a prompt-lookup method matches")
    ngram_max: Optional[int] = doc("longest n-gram a prompt-lookup method matches")
    synthetic_acceptance: Optional[float] = doc(
        "speculation.synthetic_acceptance: drafts accepted with this probability each, not by the target "
        "(null: real acceptance)",
        default=None,
    )
    k_schedule: Optional[str] = doc(
        "speculation.k_schedule as 'from batch size:k' pairs, e.g. '1:4,4:2,8:0' (null: k is fixed)", default=None
    )
    concurrency: Optional[int] = doc(
        "served backends: most requests in flight at once (null: an offline backend)", default=None
    )
    request_rate: Optional[float] = doc(
        "served backends: Poisson arrivals per second (null: as fast as the concurrency allows)", default=None
    )
    model: str = doc("model entry name")
    dataset: str = doc("dataset name")
    overrides: List[str] = doc("the job's command-line overrides")
    started_at: str = doc("UTC start time, ISO 8601")
    finished_at: Optional[str] = doc("UTC end time, ISO 8601", default=None)
    config: Dict[str, Any] = doc("the resolved config")
    native_config: Optional[Dict[str, Any]] = doc("the exact engine config that was built", default=None)
    metrics: Optional[Metrics] = doc("headline numbers", default=None)
    stats: Optional[Stats] = doc("spreads with confidence intervals", default=None)
    per_prompt: Optional[List[PromptRow]] = doc("one row per prompt", default=None)
    lossless: Optional[Lossless] = doc("greedy outputs against the baseline's", default=None)
    energy: Optional[Energy] = doc("joules, per-token figures and their source", default=None)
    baseline: Optional[BaselineInfo] = doc("whether the baseline was measured in this job or reused", default=None)
    timing: Optional[Timing] = doc("load and measurement times", default=None)
    environment: Optional[Dict[str, Any]] = doc(
        "the engine's facts: package versions, device, dtype, threads (keys vary by backend)", default=None
    )
    theory: Optional[Theory] = doc("predicted vs. measured speedup (null without speculation)", default=None)
    serving: Optional[Serving] = doc("the load and per-request latencies of a served job (null: offline)", default=None)
    compared: List[ComparedK] = doc(
        "other k values measured in this job's round robin against its baseline (measurement.compare_k; empty: none)",
        default_factory=list,
    )
    validity: Optional[Dict[str, Any]] = doc(
        "what the result depends on beyond the config (prompt file content, versions, weights, host, threads): "
        "`key`, its `parts`, and `remeasured_because` when an earlier result of this config no longer held",
        default=None,
    )
    reused_from: Optional[str] = doc(
        "run dir of the earlier ok result of this exact config that this job reused instead of measuring again",
        default=None,
    )

    @classmethod
    def start(cls, cfg, cfg_hash: str, overrides: List[str]) -> Result:
        speculation = cfg.speculation
        return cls(
            status="running",
            error=None,
            config_hash=cfg_hash,
            backend=cfg.backend.name,
            method=str(speculation.method),
            k=speculation.num_speculative_tokens,
            ngram_min=speculation.ngram_min,
            ngram_max=speculation.ngram_max,
            synthetic_acceptance=speculation.synthetic_acceptance,
            k_schedule=schedule_text(speculation.k_schedule),
            **cfg.backend.load_identity(cfg.generation),
            model=cfg.model.name,
            dataset=str(cfg.dataset.name),
            overrides=list(overrides),
            started_at=now(),
            config=clean(asdict(cfg)),
        )

    def measured(self, sections: MeasuredSections) -> None:
        """Take the sections the runner measured."""
        for section in fields(MeasuredSections):
            setattr(self, section.name, getattr(sections, section.name))

    def identity(self) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (NaN and infinities become null; secret-looking values redacted, see results/redact.py)."""
        data = redact(clean(asdict(self)))
        data["overrides"] = redact_overrides(data["overrides"])
        return data

    def summary_row(self, run_dir) -> Dict[str, Any]:
        """The job's row in the results tables."""
        return summary_row(self.to_dict(), run_dir)


def numeric_paths(node: type = None, prefix: str = "") -> List[str]:
    """Every dotted path to a number in result.json (what `measurement.objective` may name)."""
    import typing

    node = node or Result
    out = []
    for name, hint in typing.get_type_hints(node).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        target = args[0]
        if isinstance(target, type) and hasattr(target, "__dataclass_fields__"):
            out += numeric_paths(target, f"{prefix}{name}.")
        elif target in (int, float):
            out.append(f"{prefix}{name}")
    return out


def summary_row(result: Dict[str, Any], run_dir) -> Dict[str, Any]:
    """A result.json's row in the results tables (from its JSON form, so a stored result gives the same row)."""
    energy, stats = result.get("energy") or {}, result.get("stats") or {}
    row = {
        "status": result.get("status"),
        "error": result.get("error"),
        **{name: result.get(name) for name in IDENTITY_FIELDS},
        "run_dir": str(run_dir),
        "reused_from": result.get("reused_from"),
        "metrics": result.get("metrics") or {},
        "energy": {name: energy.get(name) for name in ROW_ENERGY},
        "stats": {name: stats[name] for name in ROW_STATS if name in stats},
        "theory": result.get("theory"),
        "serving": result.get("serving"),
        "compared": result.get("compared") or [],
        "finished_at": result.get("finished_at"),
    }
    return clean(row)


def objective(result, paths: Sequence[str]) -> Any:
    """The values at the given result paths (NaN where missing): one -> a float, several -> a tuple."""
    data = result.to_dict() if isinstance(result, Result) else result
    values = []
    for path in paths:
        node: Any = data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values.append(float(node) if isinstance(node, (int, float)) else math.nan)
    return values[0] if len(values) == 1 else tuple(values)
