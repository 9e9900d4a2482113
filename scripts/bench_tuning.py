"""Tuning k in a fraction of the trials: the exhaustive grid vs the theory-guided tuner vs plain TPE, in one process.

For each method (draft_model, ngram) on the embedded default with a reduced prompt set:
  grid   k = 1..8, measured as one interleaved round robin: the baseline and the 8 engines take turns on every prompt
         and repetition (the order rotating), so every k is compared with the same baseline (8 measured configs);
  tuner  what hparams_search=best_k does: a probe at k=8 with the cost model, then the probe's k and the 2 best
         predicted k measured again in one round robin against one baseline (measurement.compare_k), every job to
         a +/-3% interval or 8 rounds (the preset's measurement.target_ci / max_repetitions) (3 measured configs);
  tpe    Optuna's TPE sampler over k in 1..8 with the tuner's budget (3 measured configs, seeded).
The grid's round robin also holds the engine's own adaptive draft lengths where it has them (transformers with a
draft model: the heuristic schedule starting at k=5 and the confidence threshold capped at k=8; llama.cpp: p_min at
k=8), so they are compared with the best fixed k on the same baseline.
It prints measured runs, wall time, the chosen k and the grid's speedup at that k as a share of the grid's best (so
every choice is judged on the same measurements), and the probe curve's prediction error at every k, beside the
i.i.d. (Leviathan) model's. Targets: share >= 0.97 with <= 3 configs; curve error <= 10% at every k. --runs N repeats
everything N times and ends with one line per run and method.

    .venv/bin/python scripts/bench_tuning.py                       # llama.cpp, both methods, 3 prompts x 48 tokens
    .venv/bin/python scripts/bench_tuning.py --runs 3 --strategies grid tuner
    .venv/bin/python scripts/bench_tuning.py --backend pytorch --methods ngram dataset.num_prompts=5
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

KS = range(1, 9)
PROBE_K = 8
BUDGET = 3
ADAPTIVE_START = 5  # where transformers' heuristic schedule starts (its former default num_assistant_tokens)
DEFAULTS = ["dataset.num_prompts=3", "generation.max_new_tokens=48", "measurement.repetitions=2"]
PRECISE = ["measurement.target_ci=0.03", "measurement.max_repetitions=8"]  # conf/hparams_search/best_k.yaml's


class Bench:
    def __init__(self, backend: str, method: str, overrides: list):
        from specsweep.config.compose import compose_config
        from specsweep.session import Session

        self.method, self.session = method, Session()
        self.base = [f"backend={backend}", f"speculation={method}", "logger=none", "energy=none", *overrides]
        self.compose = compose_config
        self.ks = [k for k in KS if self.runs(k)]  # llama.cpp's prompt lookup drafts at least ngram_max tokens

    def runs(self, k: int) -> bool:
        from specsweep.config.validate import ConfigError, validate

        try:
            validate(self.cfg(k), self.session)
        except ConfigError:
            return False
        return True

    def cfg(self, k: int, *extra: str):
        return self.compose([*self.base, f"speculation.num_speculative_tokens={k}", *extra])

    def build(self, cfg):
        from specsweep import backends
        from specsweep.models.resolve import resolve_models

        return backends.build_engine(cfg, resolve_models(cfg), self.session)

    def prompts(self, cfg):
        from specsweep.config.validate import validate

        return validate(cfg, self.session)

    def run_one(self, k: int, *extra: str):
        """One ordinary job's measurement (its own interleaved baseline) -> (sections, seconds)."""
        from specsweep.energy import NoEnergyMeter
        from specsweep.measure import runner

        cfg = self.cfg(k, *extra)
        start = time.perf_counter()
        sections = runner.run(cfg, self.prompts(cfg), self.build, NoEnergyMeter(), self.session)
        return sections, time.perf_counter() - start

    def adaptive_cfgs(self):
        """The engine's own adaptive draft lengths (transformers with a draft model): name -> config."""
        from specsweep.backends import registry

        cfg = self.cfg(self.ks[0])
        cfgs = {}
        for variant in registry()[cfg.backend.name].adaptive_drafts(str(cfg.speculation.method)):
            k = ADAPTIVE_START if variant.k == "start" else max(KS)
            cfgs[f"{variant.name} ({variant.k} k={k})"] = self.cfg(k, *variant.overrides())
        return cfgs

    def grid(self):
        """Baseline, every k and the adaptive variants in one interleaved round robin -> ({key: speedup}, seconds)."""
        from rich.progress import Progress

        from specsweep.energy import NoEnergyMeter
        from specsweep.measure import baseline, phases, summary

        cfgs = {k: self.cfg(k) for k in self.ks}
        cfgs.update(self.adaptive_cfgs())
        first = cfgs[self.ks[0]]
        prompts = self.prompts(first)
        start = time.perf_counter()
        engines = {"baseline": self.build(baseline.baseline_config(first))}
        engines.update({key: self.build(cfg) for key, cfg in cfgs.items()})
        with Progress(disable=True) as progress:
            measured = phases.measure_interleaved(engines, prompts, first, NoEnergyMeter(), progress)
        for engine in engines.values():
            engine.close()
        base = measured["baseline"]
        speedups = {key: summary.phase_metrics(measured[key], base).speedup for key in cfgs}
        return speedups, time.perf_counter() - start

    def tuner(self):
        """What best_k does: a probe at PROBE_K with the cost model, then the probe's k and the best predicted k in
        one round robin on one baseline -> (chosen k, configs, seconds, curve, why no curve, measured {k: speedup})."""
        from specsweep import tuning

        probe, seconds = self.run_one(PROBE_K, "measurement.cost_model=true", *PRECISE)
        curve = probe.theory.curve
        if curve is None:
            return PROBE_K, 1, seconds, None, probe.theory.curve_note, {PROBE_K: probe.metrics.speedup}
        curve_dict = {"points": [{"k": p.k, "speedup": p.speedup} for p in curve.points]}
        ks = tuning.candidates(curve_dict, BUDGET - 1, PROBE_K, lambda k: k in self.ks)
        shared, s = self.run_one(PROBE_K, f"measurement.compare_k=[{','.join(map(str, ks))}]", *PRECISE)
        measured = {PROBE_K: shared.metrics.speedup, **{c.k: c.metrics.speedup for c in shared.compared}}
        precision = {PROBE_K: shared.stats.paired_speedup, **{c.k: c.paired_speedup for c in shared.compared}}
        print("   tuner's round robin: " + "; ".join(f"k{k} {_interval(p)}" for k, p in sorted(precision.items())))
        return max(measured, key=measured.get), len(measured), seconds + s, curve, None, measured

    def tpe(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
        seconds, seen = 0.0, {}
        for _ in range(BUDGET):
            trial = study.ask()
            k = trial.suggest_int("k", min(self.ks), max(self.ks))
            if k not in seen:  # TPE may ask for a k again: that costs no new measurement
                sections, s = self.run_one(k)
                seen[k], seconds = sections.metrics.speedup, seconds + s
            study.tell(trial, seen[k])
        return max(seen, key=seen.get), len(seen), seconds


def _interval(p) -> str:
    """A round robin's speedup with its interval and whether it met the target."""
    if p is None or p.ci_low is None:
        return f"{p.mean:.3f}" if p is not None and p.mean is not None else "n/a"
    return f"{p.mean:.3f} [{p.ci_low:.3f}, {p.ci_high:.3f}] in {p.rounds} rounds" + (
        "" if p.met else ", target NOT met"
    )


def report(method: str, grid, grid_s, tuner, tpe) -> dict:
    """Print the method's tables -> its line for the runs' summary."""
    adaptive = {key: s for key, s in grid.items() if not isinstance(key, int)}
    grid = {k: s for k, s in grid.items() if isinstance(k, int)}
    best_k = max(grid, key=grid.get)
    k_t, runs_t, secs_t, curve, why, tuner_measured = tuner
    print(f"\n== {method}: grid speedups " + " ".join(f"k{k}={s:.3f}" for k, s in grid.items()))
    print("   tuner's round robin: " + " ".join(f"k{k}={s:.3f}" for k, s in sorted(tuner_measured.items())))
    print(f"{'strategy':8} {'runs':>4} {'wall s':>7} {'chosen k':>8} {'share of grid best':>18}")
    rows = [("grid", len(grid), grid_s, best_k), ("tuner", runs_t, secs_t, k_t)]
    rows += [("tpe", *tpe)] if tpe else []
    for name, runs, secs, k in rows:
        print(f"{name:8} {runs:>4} {secs:>7.0f} {k:>8} {grid[k] / grid[best_k]:>18.3f}")
    for key, speedup in adaptive.items():  # measured in the grid's round robin, against the same baseline
        print(f"adaptive {key}: {speedup:.3f}x, {speedup / grid[best_k]:.3f} of the best fixed k")
    line = {"method": method, "grid_best": best_k, "tuner_k": k_t, "share": grid[k_t] / grid[best_k]}
    line.update({"grid_s": grid_s, "tuner_s": secs_t, "max_error": None})
    if curve is None:
        print(f"no curve: {why}")
        return line
    errors, iid = {}, {}
    print(f"{'k':>3} {'grid':>7} {'curve':>7} {'error':>7} {'iid':>7} {'iid err':>8}")
    for p in [p for p in curve.points if p.k in grid]:  # the k values the engine runs
        errors[p.k] = p.speedup / grid[p.k] - 1
        iid[p.k] = p.iid_speedup / grid[p.k] - 1 if p.iid_speedup is not None else float("nan")
        row = f"{p.k:>3} {grid[p.k]:7.3f} {p.speedup:7.3f} {errors[p.k]:+7.1%}"
        print(f"{row} {p.iid_speedup or 0:7.3f} {iid[p.k]:+8.1%}")
    print("t_verify(n) s: " + " ".join(f"{t:.3f}" for t in curve.verify_s) + f"; t_draft {curve.draft_token_s:.3f} s")
    if curve.timeline:
        print("timeline (probe medians): " + ", ".join(f"{key} {value:.3f}" for key, value in curve.timeline.items()))
    abs_err, abs_iid = [abs(e) for e in errors.values()], [abs(e) for e in iid.values()]
    print(
        f"curve error: max {max(abs_err):.1%}, median {median(abs_err):.1%}; "
        f"i.i.d.: max {max(abs_iid):.1%}, median {median(abs_iid):.1%} ({curve.tokens_source})"
    )
    return {**line, "max_error": max(abs_err)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="llamacpp", help="an offline backend that pairs interleaved")
    parser.add_argument("--methods", nargs="+", default=["draft_model", "ngram"])
    parser.add_argument("--strategies", nargs="+", default=["grid", "tuner", "tpe"], choices=["grid", "tuner", "tpe"])
    parser.add_argument("--runs", type=int, default=1, help="repeat everything this many times")
    parser.add_argument("overrides", nargs="*", default=DEFAULTS)
    args = parser.parse_args()
    if "grid" not in args.strategies or "tuner" not in args.strategies:
        parser.error("--strategies needs grid and tuner (each choice is judged on the grid's measurements)")
    logging.disable(logging.WARNING)
    print(
        f"bench_tuning: backend={args.backend} {' '.join(args.overrides)}; "
        f"k = 1..8, probe k = {PROBE_K}, budget {BUDGET}"
    )
    lines = []
    for run in range(1, args.runs + 1):
        for method in args.methods:
            bench = Bench(args.backend, method, args.overrides)
            grid, grid_s = bench.grid()
            tuner = bench.tuner()
            tpe = bench.tpe() if "tpe" in args.strategies else None
            lines.append({"run": run, **report(method, grid, grid_s, tuner, tpe)})
    print("\nrun method       grid best  tuner k  share of grid best  tuner time / grid time  curve max error")
    for x in lines:
        error = "n/a" if x["max_error"] is None else f"{x['max_error']:.1%}"
        print(
            f"{x['run']:>3} {x['method']:12} {x['grid_best']:>9} {x['tuner_k']:>8} {x['share']:>19.3f} "
            f"{x['tuner_s'] / x['grid_s']:>23.2f} {error:>16}"
        )


if __name__ == "__main__":
    main()
