"""tests/fakes.py holds the suite's one fake engine, one fake meter and one tiny-model factory."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from specsweep.backends.base import Backend
from specsweep.core import AcceptanceCounts, Generation, Prompt
from specsweep.energy import EnergyReading
from specsweep.models.resolve import ResolvedModels


def tiny_qwen2(
    out: Path,
    tokenizer_dir: Path,
    *,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Path:
    """A 2-layer random float32 Qwen2 with the real tokenizer from `tokenizer_dir`, saved in `out`: a real model for
    every code path in seconds (it says nothing about speed or quality). The defaults give head_dim 16; `seed` picks
    the random weights, so two seeds with untied embeddings give a draft that (nearly) never agrees with the target."""
    # Imported here: the fast tests that import this module for its fakes should not pay for torch and transformers.
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).to(torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# --- the fake engine ---------------------------------------------------------------------------------------------


class FakeClock:
    """A clock that moves only when a fake engine generates: set it as a module's `time` (it has `perf_counter`)
    and every duration the runner measures follows from the fakes' settings exactly."""

    def __init__(self, start: float = 1000.0):
        self.start = self.now = start

    def perf_counter(self) -> float:
        return self.now


# Acceptance of each speculative generation unless a test says otherwise: 2 draft steps, 6 of 8 tokens accepted.
ACCEPTANCE = AcceptanceCounts(drafted=8, accepted=6, num_drafts=2, accepted_per_position=[2, 2, 1, 1])


@dataclass
class FakeEngines:
    """Builds fake engines: pass it where the runner takes `build_engine(cfg)`. Every setting has a default that
    generates something sensible; what was built, generated and closed is recorded.

    tokens: output tokens per prompt (a number, or by prompt id); the ids are 0, 1, 2, ...
    per_token_s: seconds per output token (a number, or `(cfg, prompt) -> seconds`); a generation takes
      tokens x per_token_s, its first token per_token_s.
    acceptance: the counts each speculative generation reports (None: it reports none).
    diverge: prompt id -> the index where a speculative output differs from the baseline's.
    clock: advanced by each generation's wall time (None: real time; `sleep` then sleeps it).
    slowdown: with a clock, the machine gets this much slower per second of clock time.
    noise: each wall time is scaled by a seeded uniform draw in [1 - noise, 1 + noise].
    forward_s: seconds of one timed forward (`Backend.forward_timers`): n -> the target over n new tokens, "draft"
      -> the draft model over 1 token (a draft_model engine only); None: the engine cannot time its forwards.
    engine: the engine class built (a FakeEngine subclass, e.g. one that overrides the served hooks).
    """

    tokens: Union[int, Dict[str, int]] = 4
    per_token_s: Union[float, Callable[[Any, Prompt], float]] = 0.01
    acceptance: Optional[AcceptanceCounts] = field(default_factory=lambda: copy.deepcopy(ACCEPTANCE))
    diverge: Dict[str, int] = field(default_factory=dict)
    clock: Optional[FakeClock] = None
    sleep: bool = False
    slowdown: float = 0.0
    noise: float = 0.0
    forward_s: Optional[Callable[[Any], float]] = None
    engine: Optional[type] = None
    seed: int = 0
    built: List[Any] = field(default_factory=list)  # the config of every build, in order
    calls: List[Tuple[str, str]] = field(default_factory=list)  # ("spec" | "base", prompt id) of every generation
    open: List["FakeEngine"] = field(default_factory=list)  # engines built and not closed yet
    most_open: int = 0  # the most engines open at once

    def __call__(self, cfg) -> FakeEngine:
        engine = (self.engine or FakeEngine)(cfg, self)
        engine.load()
        self.built.append(cfg)
        return engine

    def methods(self) -> List[str]:
        """The speculation method of every build, in order ("none" for a baseline or a draft timed alone)."""
        return [str(cfg.speculation.method) for cfg in self.built]


class FakeEngine(Backend):
    """A `Backend` with no model: deterministic outputs and timings as its `FakeEngines` says (see there)."""

    name = "fake"

    def __init__(self, cfg, engines: FakeEngines):
        models = ResolvedModels(target="fake-target", draft="fake-draft")  # the config's backend maps them as usual
        super().__init__(cfg, native=cfg.backend.native_config(cfg, models), models=models, session=None)
        self.cfg, self.engines = cfg, engines
        self.speculative = self.method != "none"
        self.rng = random.Random(engines.seed)

    def load(self) -> None:
        self.engines.open.append(self)
        self.engines.most_open = max(self.engines.most_open, len(self.engines.open))

    def close(self) -> None:
        self.engines.open.remove(self)

    def environment(self) -> Dict[str, Any]:
        return {"engine": "fake"}

    def peak_memory(self) -> Dict[str, Any]:
        return {"peak_memory_mb": 12.5, "peak_memory_source": "fake", "peak_memory_per_device_mb": None}

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        return [self._generate_one(p) for p in prompts]

    def _generate_one(self, prompt: Prompt) -> Generation:
        f = self.engines
        count = f.tokens if isinstance(f.tokens, int) else f.tokens[prompt.id]
        ids = list(range(count))
        if self.speculative and prompt.id in f.diverge:
            ids[f.diverge[prompt.id]] = -1  # a planted divergence from the baseline's output
        per_token = f.per_token_s(self.cfg, prompt) if callable(f.per_token_s) else f.per_token_s
        wall = count * per_token * (1 + f.noise * (2 * self.rng.random() - 1))
        if f.clock is not None:
            wall *= 1 + f.slowdown * (f.clock.now - f.clock.start)
            f.clock.now += wall
        elif f.sleep:
            time.sleep(wall)
        f.calls.append(("spec" if self.speculative else "base", prompt.id))
        counts = copy.deepcopy(f.acceptance) if self.speculative else None
        return Generation(prompt.id, 5, ids, wall, per_token, counts, text=" ".join(map(str, ids)))

    def forward_timers(self, prompt: Prompt, n_max: int) -> Dict[Any, Callable[[], float]]:
        forward_s = self.engines.forward_s
        if forward_s is None:
            return super().forward_timers(prompt, n_max)
        keys = list(range(1, n_max + 1)) + (["draft"] if self.method == "draft_model" else [])
        return {key: (lambda key=key: forward_s(key)) for key in keys}


# --- the fake energy meter ---------------------------------------------------------------------------------------


class FakeMeter:
    """An energy meter with no hardware: every window reads `joules` from one device ("gpu") over `seconds`, idle
    power was measured (`idle_watts`, 1 W on the gpu unless given), and close() raises `close_error` when one is
    set. `events` records ("begin" | "end", key) in order."""

    source = "fake-meter"

    def __init__(
        self,
        joules: float = 2.0,
        seconds: float = 0.5,
        idle_watts: Optional[Dict[str, float]] = None,
        close_error: Optional[Exception] = None,
    ):
        self.joules, self.seconds, self.close_error = joules, seconds, close_error
        idle = {"watts": idle_watts or {"gpu": 1.0}, "seconds": 1.0, "estimated": False, "source": "measured"}
        self.context: Dict[str, Any] = {"counter_update_s": 0.1, "not_measured": {"dram": "no counter"}, "idle": idle}
        self.events: List[Tuple[str, str]] = []
        self.closed = False

    def begin(self, key: str) -> None:
        self.events.append(("begin", key))

    def end(self, key: str) -> EnergyReading:
        self.events.append(("end", key))
        return EnergyReading(self.joules, self.seconds, {"gpu": self.joules}, self.source, context=self.context)

    def close(self) -> None:
        if self.close_error is not None:
            raise self.close_error
        self.closed = True
