"""Harness overhead: the same generate() calls through specsweep's runner vs. a bare transformers loop.

Same process, same loaded weights, same prompts and generate arguments; the two are interleaved round by round
alternating which goes first, so drift and warm-up hit both. Prints each round and the ratio of medians
(target: <= 1.03).

    .venv/bin/python scripts/bench_harness_overhead.py                      # embedded default, draft_model
    .venv/bin/python scripts/bench_harness_overhead.py speculation=ngram --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from rich.progress import Progress

from specsweep.backends import build_engine
from specsweep.config.compose import to_config
from specsweep.config.register import register_configs
from specsweep.config.validate import validate
from specsweep.datasets import load_prompts
from specsweep.energy import NoEnergyMeter
from specsweep.measure.phases import measure_phase
from specsweep.models.resolve import resolve_models
from specsweep.session import Session

CONF = Path(__file__).resolve().parents[1] / "conf"


def bare_loop(engine, prompts) -> float:
    """What a user would write by hand: tokenize, generate, nothing else."""
    native = engine.native
    kwargs = dict(native["generate_kwargs"])
    if engine.assistant is not None:
        for key, value in native["assistant_generation_config"].items():
            setattr(engine.assistant.generation_config, key, value)
        kwargs["assistant_model"] = engine.assistant
    inputs = [torch.tensor([engine.encode(p)]) for p in prompts]
    start = time.perf_counter()
    for ids in inputs:
        torch.manual_seed(0)
        with torch.inference_mode():
            engine.model.generate(
                ids, attention_mask=torch.ones_like(ids), pad_token_id=engine.tokenizer.pad_token_id, **kwargs
            )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("overrides", nargs="*", default=[])
    args = parser.parse_args()
    register_configs()
    overrides = [
        "dataset.num_prompts=4",
        "generation.max_new_tokens=32",
        "measurement.repetitions=1",
        "measurement.warmup=0",
        *args.overrides,
    ]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = to_config(compose("config", overrides=overrides))
    validate(cfg)
    prompts = load_prompts(cfg.dataset)
    engine = build_engine(cfg, resolve_models(cfg), Session())
    engine.generate(prompts[:1])  # warm-up, shared by both
    meter = NoEnergyMeter()
    bare, harness = [], []
    with Progress(transient=True) as progress:
        for r in range(args.rounds):
            for which in ("bare", "harness") if r % 2 == 0 else ("harness", "bare"):  # alternate who goes first
                if which == "bare":
                    bare.append(bare_loop(engine, prompts))
                else:
                    start = time.perf_counter()
                    measure_phase(engine, prompts, cfg, meter, "harness", progress)
                    harness.append(time.perf_counter() - start)
            print(
                f"round {r + 1}: bare {bare[-1]:.2f} s   specsweep {harness[-1]:.2f} s   "
                f"ratio {harness[-1] / bare[-1]:.3f}"
            )
    ratio = statistics.median(harness) / statistics.median(bare)
    print(
        f"{cfg.speculation.method} k={cfg.speculation.num_speculative_tokens} on {cfg.model.name}, "
        f"{len(prompts)} prompts x "
        f"{cfg.generation.max_new_tokens} tokens, torch threads {torch.get_num_threads()}"
    )
    print(
        f"median bare {statistics.median(bare):.2f} s, median specsweep {statistics.median(harness):.2f} s, "
        f"overhead ratio {ratio:.3f} (target <= 1.03)"
    )


if __name__ == "__main__":
    main()
