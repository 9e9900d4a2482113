"""One experiment, start to finish: validate -> map -> run -> measure -> record -> objective."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from specsweep.backends import BACKENDS, engine_class
from specsweep.config.schema import METHODS_WITH_DRAFT, ExperimentConfig
from specsweep.config.validate import validate
from specsweep.models.registry import draft_reference, resolve_models
from specsweep import results
from specsweep.tracking import make_tracker

log = logging.getLogger("specsweep")


class JobFailed(RuntimeError):
    """The job ran and failed; its result.json says why (Hydra counts it as a failed job)."""


def to_config(dcfg: DictConfig) -> ExperimentConfig:
    return OmegaConf.to_object(dcfg)


def native_config(cfg: ExperimentConfig, prepare: bool = False) -> Dict[str, Any]:
    return BACKENDS[cfg.backend.name].native_config(cfg, resolve_models(cfg, prepare=prepare))


def build_engine(cfg: ExperimentConfig):
    models = resolve_models(cfg)
    engine = engine_class(cfg.backend.name)(cfg, BACKENDS[cfg.backend.name].native_config(cfg, models), models)
    engine.load()
    return engine


def objective(result: Dict[str, Any], paths) -> Any:
    values = []
    for path in paths:
        node: Any = result
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values.append(float(node) if isinstance(node, (int, float)) else math.nan)
    return values[0] if len(values) == 1 else tuple(values)


def _hydra_context() -> Dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    return {
        "run_dir": run_dir,
        "table": (Path(hc.sweep.dir) if multirun else run_dir.parent) / results.TABLE_FILE,
        "overrides": list(hc.overrides.task),
        "multirun": multirun,
    }


def _store_path() -> Path:
    from hydra.utils import get_original_cwd

    return Path(get_original_cwd()) / "outputs" / results.TABLE_FILE


def run(dcfg: DictConfig) -> Any:
    cfg = to_config(dcfg)
    ctx = _hydra_context()
    if cfg.dry_run:
        validate(cfg)
        print(json.dumps({"backend": cfg.backend.name, "method": cfg.speculation.method, "native_config": native_config(cfg)}, indent=2, default=str))
        if cfg.speculation.method in METHODS_WITH_DRAFT and draft_reference(cfg) is None:
            where = "model.draft" if cfg.speculation.method == "draft_model" else f"model.heads.{cfg.speculation.method}"
            print(f"specsweep: note: no draft weights set (speculation.draft_model or {where}); a real run needs them", file=sys.stderr)
        return None

    cfg_hash = results.config_hash(cfg)
    store = _store_path()
    if not cfg.force:
        done = results.find_done(store, cfg_hash)
        if done is not None:
            log.info("skipping: this config already has an ok result in %s (force=true reruns it)", done["run_dir"])
            prior = json.loads((Path(done["run_dir"]) / results.RESULT_FILE).read_text())
            return objective(prior, cfg.measurement.objective)

    spec = cfg.speculation
    result: Dict[str, Any] = {
        "status": "running",
        "error": None,
        "config_hash": cfg_hash,
        "backend": cfg.backend.name,
        "method": spec.method,
        "k": spec.num_speculative_tokens,
        "ngram_min": spec.ngram_min,
        "ngram_max": spec.ngram_max,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "overrides": ctx["overrides"],
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "config": asdict(cfg),
        "metrics": None,
        "energy": None,
    }
    from specsweep.datasets import load_prompts
    from specsweep.energy import make_meter
    from specsweep.measure import runner

    meter = None
    try:
        validate(cfg)  # single runs were validated before Hydra started; a sweep's invalid job is recorded here
        result["native_config"] = native_config(cfg)
        prompts = load_prompts(cfg.dataset)
        meter = make_meter(cfg.energy)
        result.update(runner.run(cfg, prompts, build_engine, meter))
        result["status"] = "ok"
    except Exception as err:  # a failed job is recorded, never lost, and the sweep goes on
        result["status"] = "failed"
        result["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        log.error("job failed: %s\n%s", result["error"], traceback.format_exc())
    finally:
        if meter is not None:
            meter.close()
        result["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        results.write_result(ctx["run_dir"], result)
        row = results.summary_row(result, ctx["run_dir"])
        results.append_row(ctx["table"], row)
        if store != ctx["table"]:
            results.append_row(store, row)
        make_tracker(cfg.logger, ctx["run_dir"], ctx["table"].parent if ctx["multirun"] else None).log_result(result)
    if result["status"] != "ok":
        raise JobFailed(result["error"])
    _print_summary(result)
    return objective(result, cfg.measurement.objective)


def _print_summary(result: Dict[str, Any]) -> None:
    m = result["metrics"]

    def fmt(v, spec="{:.3g}"):
        return "n/a" if v is None else spec.format(v)

    lines = [
        f"{result['backend']} {result['method']} k={result['k']} on {result['model']}:",
        f"  {fmt(m['tokens_per_s'])} tok/s vs baseline {fmt(m['baseline_tokens_per_s'])} tok/s -> speedup {fmt(m['speedup'])}x",
        f"  acceptance rate {fmt(m['acceptance_rate'])}, mean acceptance length {fmt(m['mean_acceptance_length'])}",
        f"  TTFT {fmt(m['ttft_s'])} s, TPOT {fmt(m['tpot_s'])} s, peak memory {fmt(m['peak_memory_mb'], '{:.0f}')} MB",
        f"  lossless: {result['lossless'].get('match_rate') if result['lossless']['checked'] else result['lossless']['reason']}",
        f"  energy: {fmt(result['energy'].get('joules'))} J" + (f" ({result['energy'].get('source')}{', estimated' if result['energy'].get('estimated') else ''})" if result["energy"].get("joules") is not None else f" ({result['energy'].get('unavailable_reason')})"),
    ]
    print("\n".join(lines), file=sys.stderr)
