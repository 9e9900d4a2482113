"""Sweep efficiency: an N-job k sweep through Hydra's basic launcher (one process) on the embedded default.

Prints total wall time vs the sum of the jobs' generation time (target <= 1.25), how many times each model was
loaded (target: once), and the process RSS after each job (memory must not grow from job to job).

    .venv/bin/python scripts/bench_sweep.py                 # 8 jobs, k = 1..8
    .venv/bin/python scripts/bench_sweep.py --jobs 12       # the memory check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument(
        "overrides",
        nargs="*",
        default=["dataset.num_prompts=3", "generation.max_new_tokens=32", "measurement.repetitions=1"],
    )
    args = parser.parse_args()
    ks = ",".join(str(k) for k in range(1, args.jobs + 1))
    with tempfile.TemporaryDirectory(prefix="specsweep-bench-") as tmp:
        cmd = [
            sys.executable,
            str(REPO / "main.py"),
            "-m",
            "backend=pytorch",  # the figures in docs/results.md are transformers'
            "speculation=draft_model",
            f"speculation.num_speculative_tokens={ks}",
            "logger=none",
            "energy=none",
            f"hydra.sweep.dir={tmp}/sweep",
            *args.overrides,
        ]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        total = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"sweep failed:\n{proc.stderr[-3000:]}")
        results = sorted(
            (json.loads(p.read_text()) for p in Path(tmp, "sweep").glob("*/result.json")), key=lambda r: r["k"]
        )
    generation = sum(r["timing"]["generation_s"] for r in results)
    print(f"{len(results)} jobs (k = 1..{args.jobs}), overrides: {' '.join(args.overrides)}")
    print(f"{'k':>3} {'gen s':>7} {'load s':>7} {'tok/s':>7} {'speedup':>8} {'RSS MB':>8}  baseline")
    for r in results:
        m, t = r["metrics"], r["timing"]
        print(
            f"{r['k']:>3} {t['generation_s']:7.1f} {t.get('load_s', 0):7.2f} {m['tokens_per_s']:7.2f} "
            f"{m['speedup']:8.3f} "
            f"{r['environment']['rss_mb']:8.0f}  {r['baseline']['source']}"
        )
    print(
        f"total wall {total:.1f} s, sum of generation time {generation:.1f} s, "
        f"ratio {total / generation:.3f} (target <= 1.25)"
    )
    print("model loads in the sweep process:", json.dumps(results[-1]["environment"]["model_loads"]))
    rss = [r["environment"]["rss_mb"] for r in results]
    print(
        f"RSS after job 1 {rss[0]:.0f} MB, after job 2 {rss[1] if len(rss) > 1 else rss[0]:.0f} MB, "
        f"after the last {rss[-1]:.0f} MB "
        f"(growth after job 2: {rss[-1] - (rss[1] if len(rss) > 1 else rss[0]):+.0f} MB)"
    )


if __name__ == "__main__":
    main()
