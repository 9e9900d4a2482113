"""The timed phase loop: warm-up, then repetitions of timed and metered windows over the prompts, on one engine
(`measure_phase`) or on several interleaved (`measure_interleaved`); and `Engines`, the job's engines, each built
once and all closed at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from rich.progress import Progress

from specsweep.core import AcceptanceCounts, Generation, Prompt, total_acceptance
from specsweep.energy import EnergyMeter, EnergyReading
from specsweep.measure import metrics


@dataclass
class Phase:
    """Everything measured for one engine (speculative or baseline) over all repetitions."""

    label: str
    generations: List[List[Generation]] = field(default_factory=list)  # [repetition][prompt]
    batch_walls: List[float] = field(default_factory=list)
    energy: List[EnergyReading] = field(default_factory=list)
    seconds: float = 0.0  # time spent in this phase, warm-up included
    # acceptance per timed call, from engines that count a window rather than each generation (servers)
    window_acceptance: List[AcceptanceCounts] = field(default_factory=list)
    acceptance_refused: Optional[str] = None  # why the windows' counts are not reported (Backend.acceptance_refused)
    failures: List[Any] = field(default_factory=list)  # requests of the timed windows that failed or timed out

    def all(self) -> List[Generation]:
        return [g for rep in self.generations for g in rep]

    def by_prompt(self) -> Dict[str, List[Generation]]:
        out: Dict[str, List[Generation]] = {}
        for g in self.all():
            out.setdefault(g.prompt_id, []).append(g)
        return out

    def output_tokens(self) -> int:
        return sum(metrics.output_tokens(g) for g in self.all())

    def wall_s(self) -> float:
        return sum(self.batch_walls)

    def acceptance(self) -> Optional[AcceptanceCounts]:
        """The phase's counts: its generations' own, else its windows' (a server's), else None."""
        if self.acceptance_refused:
            return None
        return total_acceptance([g.acceptance for g in self.all()]) or total_acceptance(self.window_acceptance)


def _window(engine, chunk: List[Prompt], meter: EnergyMeter, phase: Phase, outputs: List[Generation]) -> None:
    """One timed and metered generation of a batch; a window starts and ends when the device is idle."""
    engine.synchronize()
    engine.begin_window()  # outside the timed window: e.g. reading a server's counters
    meter.begin(phase.label)
    start = time.perf_counter()
    outputs.extend(engine.generate(chunk))
    engine.synchronize()
    phase.batch_walls.append(time.perf_counter() - start)
    phase.energy.append(meter.end(phase.label))
    phase.failures.extend(engine.window_failures())
    window = engine.window_acceptance()  # after the window: None where each generation carries its counts
    if window is not None:
        phase.window_acceptance.append(window)
    phase.acceptance_refused = phase.acceptance_refused or engine.acceptance_refused


def measure_phase(engine, prompts: List[Prompt], cfg, meter: EnergyMeter, label: str, progress: Progress) -> Phase:
    """Warm up, then every repetition over every batch (`engine.timed_batches`) on one engine."""
    batches = engine.timed_batches(prompts)
    task = progress.add_task(
        f"{label}: warm-up", total=cfg.measurement.warmup + cfg.measurement.repetitions * len(batches)
    )
    started = time.perf_counter()
    for _ in range(cfg.measurement.warmup):
        engine.generate(batches[0])
        progress.advance(task)
    phase = Phase(label)
    for rep in range(cfg.measurement.repetitions):
        progress.update(task, description=f"{label}: repetition {rep + 1}/{cfg.measurement.repetitions}")
        outputs: List[Generation] = []
        for chunk in batches:
            _window(engine, chunk, meter, phase, outputs)
            progress.advance(task)
        phase.generations.append(outputs)
    phase.seconds = time.perf_counter() - started
    return phase


def measure_interleaved(
    engines: Dict[str, Any],
    prompts: List[Prompt],
    cfg,
    meter: EnergyMeter,
    progress: Progress,
    precise: Optional[Callable[[Dict[str, Phase]], bool]] = None,
):
    """The engines warm up, then for every repetition and batch each engine generates once, the one going first
    rotating from batch to batch and repetition to repetition: whatever the machine does meanwhile (clock changes,
    other load) lands on every side of the speedup. engines: label -> engine (a baseline and one or more speculative
    configurations sharing it, of one backend: the first one's `timed_batches` batch them all), in order. With
    `precise` (measurement.target_ci), rounds go on after measurement.repetitions until precise(phases) or
    measurement.max_repetitions. Returns label -> Phase."""
    batches = next(iter(engines.values())).timed_batches(prompts)
    reps = cfg.measurement.repetitions
    most = cfg.measurement.max_repetitions if precise is not None else reps
    task = progress.add_task(
        "interleaved: warm-up", total=len(engines) * (cfg.measurement.warmup + reps * len(batches))
    )
    started = time.perf_counter()
    for engine in engines.values():
        for _ in range(cfg.measurement.warmup):
            engine.generate(batches[0])
            progress.advance(task)
    phases = {label: Phase(label) for label in engines}
    rep = 0
    while rep < most and (rep < reps or not precise(phases)):
        if rep >= reps:
            progress.update(task, total=len(engines) * (cfg.measurement.warmup + (rep + 1) * len(batches)))
        progress.update(task, description=f"interleaved: repetition {rep + 1}/{reps if rep < reps else most}")
        _round(engines, batches, rep, meter, phases, progress, task)
        rep += 1
    for phase in phases.values():  # the time is shared: split evenly (Timing.generation_s adds it back up)
        phase.seconds = (time.perf_counter() - started) / len(phases)
    return phases


def _round(engines: Dict[str, Any], batches, rep: int, meter, phases: Dict[str, Phase], progress, task) -> None:
    """One repetition: every batch on every engine, the one going first rotating (two engines: alternating)."""
    outputs: Dict[str, List[Generation]] = {label: [] for label in engines}
    labels = list(engines)
    for i, chunk in enumerate(batches):
        turn = (rep + i) % len(labels)
        for label in labels[turn:] + labels[:turn]:
            _window(engines[label], chunk, meter, phases[label], outputs[label])
            progress.advance(task)
    for label, phase in phases.items():
        phase.generations.append(outputs[label])


class Engines:
    """The engines of one job by side ("baseline", "speculative"): each built once through build_engine(cfg), its
    load timed (`load_s`); `close(side)` closes one early, and leaving the `with` block closes every one still open,
    the newest first, even when one of them fails to close."""

    def __init__(self, build_engine: Callable[[Any], Any]):
        self._build = build_engine
        self.open: Dict[str, Any] = {}
        self.load_s: Dict[str, float] = {}

    def build(self, side: str, cfg) -> Any:
        start = time.perf_counter()
        engine = self.open[side] = self._build(cfg)
        self.load_s[side] = time.perf_counter() - start
        return engine

    def close(self, side: str) -> None:
        self.open.pop(side).close()

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc) -> None:
        _close_all(list(self.open.values())[::-1])
        self.open = {}


def _close_all(engines: List[Any]) -> None:
    if engines:
        try:
            engines[0].close()
        finally:
            _close_all(engines[1:])
