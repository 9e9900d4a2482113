"""k per load level: `hparams_search=k_by_load` against the exhaustive grid (every k at every level), one after the
other on the same machine, through main.py as a user runs them.

Prints, per concurrency level, the grid's speedup at every k, its best of {off, k}, the search's choice and where the
grid puts it (a share of the grid's best), the schedule's own check where the engine ran it, and the search's
measuring time as a share of the grid's (target: <= 30%; the choice within 3% of the grid's best at every level).

    .venv/bin/python scripts/bench_k_by_load.py                               # llamacpp_server, draft_model
    .venv/bin/python scripts/bench_k_by_load.py --method ngram --min-k 3 --probe-k 8   # llama.cpp n-grams: k >= 3
    .venv/bin/python scripts/bench_k_by_load.py --backend vllm_server --method ngram --levels 1 2
    .venv/bin/python scripts/bench_k_by_load.py ... --keep DIR        # keep the jobs; --grid-from DIR: reuse a grid
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = ["dataset.num_prompts=4", "generation.max_new_tokens=48", "measurement.repetitions=2"]


def main_py(cwd: Path, *args: str) -> None:
    cmd = [sys.executable, str(REPO / "main.py"), "-m", *args, "logger=none", "energy=none"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=cwd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def results(cwd: Path) -> list:
    out = []
    for path in (cwd / "outputs" / "sweeps").glob("*/*/result.json"):
        out.append(json.loads(path.read_text()))
    return out


def grid_table(grid: list) -> dict:
    """{concurrency: {k: speedup}} of the grid's ok jobs, and the measuring seconds they took."""
    table: dict = {}
    for r in grid:
        if r["status"] == "ok":
            table.setdefault(r["concurrency"], {})[r["k"]] = r["metrics"]["speedup"]
    return table


def report(summary: dict, grid: list, ks: range) -> None:
    table = grid_table(grid)
    grid_s = sum((r.get("timing") or {}).get("generation_s") or 0.0 for r in grid)
    print(f"\n{'c':>3} " + " ".join(f"{'k=' + str(k):>7}" for k in ks) + "  grid best  search  share")
    for level in summary["levels"]:
        c, row = level["concurrency"], table.get(level["concurrency"], {})
        best_k, best = max([(0, 1.0)] + list(row.items()), key=lambda kv: (kv[1], -kv[0]))
        chosen = level["best_k"]
        at_chosen = 1.0 if chosen == 0 else row.get(chosen)
        share = f"{at_chosen / best:.3f}" if at_chosen is not None else "n/a"
        cells = " ".join(f"{row[k]:7.3f}" if k in row else f"{'n/a':>7}" for k in ks)
        print(f"{c:>3} {cells}  {'off' if best_k == 0 else 'k=' + str(best_k):>9}  {_k(chosen):>6}  {share}")
        if level.get("schedule_check"):
            print(f"    schedule here: {level['schedule_check']}")
    share_s = summary["search_s"] / grid_s if grid_s else float("nan")
    print(
        f"search: {summary['search_runs']} runs, {summary['search_s']:.0f} s measuring; grid: {len(grid)} runs, "
        f"{grid_s:.0f} s; search/grid = {share_s:.1%}"
    )
    print(f"schedule: {summary['schedule']}; note: {summary['note'] or '-'}")


def _k(k) -> str:
    return "n/a" if k is None else ("off" if k == 0 else f"k={k}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="llamacpp_server")
    parser.add_argument("--method", default="draft_model")
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--probe-k", type=int, default=4)
    parser.add_argument("--min-k", type=int, default=1, help="the grid's smallest k (the engine refuses smaller)")
    parser.add_argument("overrides", nargs="*", default=DEFAULTS)
    parser.add_argument("--keep", type=Path, help="run in this dir and keep it (default: a temporary one)")
    parser.add_argument("--grid-from", type=Path, help="a dir where this grid already ran (as --keep leaves it)")
    args = parser.parse_args()
    base = [f"backend={args.backend}", f"speculation={args.method}", *args.overrides]
    levels = ",".join(map(str, args.levels))
    with tempfile.TemporaryDirectory(prefix="specsweep-k-by-load-") as tmp:
        root = args.keep or Path(tmp)
        search_dir, grid_dir = root / "search", args.grid_from or root / "grid"
        search_dir.mkdir(parents=True, exist_ok=True), grid_dir.mkdir(parents=True, exist_ok=True)
        search = [f"hydra.sweeper.levels=[{levels}]", f"hydra.sweeper.probe_k={args.probe_k}", *base]
        main_py(search_dir, "hparams_search=k_by_load", *search)
        if args.grid_from is None:
            ks = ",".join(str(k) for k in range(args.min_k, args.probe_k + 1))
            main_py(grid_dir, f"generation.concurrency={levels}", f"speculation.num_speculative_tokens={ks}", *base)
        found = list((search_dir / "outputs" / "sweeps").glob("*/k_by_load.json"))
        if not found:
            sys.exit(f"the search wrote no k_by_load.json (its jobs: {search_dir / 'outputs'})")
        report(json.loads(found[-1].read_text()), results(grid_dir), range(args.min_k, args.probe_k + 1))


if __name__ == "__main__":
    main()
