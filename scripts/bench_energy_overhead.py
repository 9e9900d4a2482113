"""What the energy monitor costs: the same generations timed with and without energy windows, in one run.

    .venv/bin/python scripts/bench_energy_overhead.py                       # 0.5B model, 3 prompts, 16 tokens, 5 rounds
    .venv/bin/python scripts/bench_energy_overhead.py --rounds 9 model=qwen2.5-coder-1.5b generation.max_new_tokens=64

One engine is loaded once. Each round times one pass over the prompts per condition (no meter and every meter),
interleaved call by call in rotating order, one energy window per generate call as the runner opens them.
Reported side by side:
  ratio       median over rounds of (pass with the meter / pass without it, same round); target <= 1.01
  min ratio   fastest pass with the meter / fastest pass without it (least disturbed by other load)
  window ms   the meter's own cost per window (begin + end, timed in isolation over many empty windows)
  cost ratio  1 + window cost x windows per pass / pass time: the same overhead without the run-to-run noise
Meters: zeus as configured on this machine, zeus over a fake RAPL sysfs tree (the real Zeus code reading files and
running its wrap-around tracker processes, as on a RAPL machine), and codecarbon (estimate).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OVERRIDES = [
    "model=qwen2.5-coder-0.5b",
    "speculation=none",
    "dataset.num_prompts=3",
    "generation.max_new_tokens=16",
]


def fake_rapl_tree(root: Path) -> Path:
    """intel-rapl:0 (package) with an intel-rapl:0:0 (dram) subzone, the files Linux powercap exposes."""
    for zone, name in ((root / "intel-rapl:0", "package-0"), (root / "intel-rapl:0" / "intel-rapl:0:0", "dram")):
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text("1000000\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


def timed_call(engine, prompt, meter) -> float:
    """One generate call, inside an energy window when `meter` is given (as the runner opens them)."""
    start = time.perf_counter()
    if meter is not None:
        meter.begin("bench")
    engine.generate([prompt])
    if meter is not None:
        meter.end("bench")
    return time.perf_counter() - start


def window_cost_s(meter, windows: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(windows):
        meter.begin("cost")
        meter.end("cost")
    return (time.perf_counter() - start) / windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args, overrides = parser.parse_known_args()

    from hydra import compose, initialize_config_dir

    from specsweep.backends import build_engine
    from specsweep.config.compose import to_config
    from specsweep.config.register import register_configs
    from specsweep.config.validate import validate
    from specsweep.datasets import load_prompts
    from specsweep.energy import make_meter
    from specsweep.energy.config import EnergyConfig
    from specsweep.models.resolve import resolve_models
    from specsweep.session import Session

    register_configs()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = to_config(compose("config", overrides=DEFAULT_OVERRIDES + overrides))
    validate(cfg)
    load_before = os.getloadavg()
    prompts = load_prompts(cfg.dataset)
    engine = build_engine(cfg, resolve_models(cfg), Session())
    tree = fake_rapl_tree(Path(tempfile.mkdtemp(prefix="fake-rapl-")))
    meters = {
        "zeus": make_meter(EnergyConfig(meter="zeus"), Session()),
        "zeus + RAPL (fake sysfs tree)": make_meter(
            EnergyConfig(meter="zeus", rapl_dir=str(tree), gpu_indices=[]), Session()
        ),
        "codecarbon (estimate)": make_meter(EnergyConfig(meter="codecarbon"), Session()),
    }
    timed_call(engine, prompts[0], None)  # warm-up
    conditions = [None, *meters]
    passes = {c: [0.0] * args.rounds for c in conditions}
    for r in range(args.rounds):
        for i, prompt in enumerate(prompts):  # interleaved call by call, so load drift hits every condition alike
            shift = (r + i) % len(conditions)
            for c in conditions[shift:] + conditions[:shift]:
                passes[c][r] += timed_call(engine, prompt, meters.get(c))
    engine.close()

    without = passes[None]
    print(
        f"\n{cfg.model.name}, {len(prompts)} prompts x {cfg.generation.max_new_tokens} tokens, {args.rounds} rounds; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / {os.getloadavg()[0]:.1f} after"
    )
    print(f"no meter: median pass {statistics.median(without):.3f} s")
    print(
        f"{'meter':30} {'source':20} {'median pass s':>13} {'ratio':>7} {'min ratio':>9} "
        f"{'window ms':>10} {'cost ratio':>10}"
    )
    for name, meter in meters.items():
        ratio = statistics.median(w / wo for w, wo in zip(passes[name], without))
        cost = window_cost_s(meter)
        cost_ratio = 1 + cost * len(prompts) / statistics.median(without)
        print(
            f"{name:30} {meter.source:20} {statistics.median(passes[name]):13.3f} {ratio:7.4f} "
            f"{min(passes[name]) / min(without):9.4f} {cost * 1000:10.3f} {cost_ratio:10.5f}"
        )
        meter.close()


if __name__ == "__main__":  # Zeus' RAPL tracker processes are spawned: they re-import this module
    main()
