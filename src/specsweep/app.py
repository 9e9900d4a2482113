"""One experiment, start to finish: validate -> map -> run + measure -> record -> objective.

`run` reads as the recipe; each step is one call into one module. Failure handling lives in one place:
`job.recording`, which writes result.json, the table rows and the tracker whatever happens inside it (a sweep's
failed jobs are then summed up once, by `sweep.SweepSummary`, when the sweep ends).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, Optional

from omegaconf import DictConfig

from specsweep import backends, job, results
from specsweep.config.compose import to_config
from specsweep.config.schema import ExperimentConfig
from specsweep.config.validate import validate
from specsweep.core import one_line
from specsweep.methods import method_spec
from specsweep.models.resolve import draft_reference, resolve_models
from specsweep.session import Session

log = logging.getLogger("specsweep")


def run(dcfg: DictConfig, session: Session) -> Any:
    """The Hydra task: one job of a run or sweep. Returns the objective the sweeper optimises."""
    cfg = to_config(dcfg)
    if cfg.dry_run:
        return dry_run(cfg, session)
    paths = job.JobPaths.from_hydra()
    reused = job.reusable_result(cfg, paths)
    if reused is not None:
        return results.objective(reused, cfg.measurement.objective)
    with job.recording(cfg, paths) as result:
        prompts = validate(cfg, session)  # single runs were validated before Hydra started: a no-op then
        result.native_config = backends.native_config(cfg, resolve_models(cfg))
        result.measured(measure(cfg, prompts, session))
    if result.status != "ok":
        return job.failed_job(result, cfg, paths)
    results.print_summary(result)
    return results.objective(result, cfg.measurement.objective)


def measure(cfg: ExperimentConfig, prompts, session: Session):
    """Run the speculative job and its paired baseline; the measured sections of the result."""
    from specsweep.energy import make_meter
    from specsweep.measure import runner

    def build_engine(run_cfg: ExperimentConfig):
        return backends.build_engine(run_cfg, resolve_models(run_cfg), session)

    meter = make_meter(cfg.energy, session)
    # the runner closes the meter when measuring ends, whatever happens; its error becomes energy.meter_error
    return runner.run(cfg, prompts, build_engine, meter, session, close_meter=_close_meter)


def _close_meter(meter) -> Optional[str]:
    """Close the meter; never raises: a meter failing at the end must not lose the measurement (-> its error)."""
    try:
        meter.close()
    except Exception as err:
        log.error("the energy meter failed to close: %s: %s", type(err).__name__, err)
        return one_line(err)
    return None


def dry_run(cfg: ExperimentConfig, session: Session) -> None:
    """Print the native engine config this run would build; load nothing, write nothing."""
    validate(cfg, session)
    native = backends.native_config(cfg, resolve_models(cfg, prepare=False))
    print(
        json.dumps(
            {"backend": cfg.backend.name, "method": str(cfg.speculation.method), "native_config": native},
            indent=2,
            default=str,
        )
    )
    row = method_spec(cfg.speculation.method)
    if row.needs_weights and draft_reference(cfg) is None:
        print(
            f"specsweep: note: no draft weights set (speculation.draft_model or {row.weights_field()}); "
            "a real run needs them",
            file=sys.stderr,
        )
    return None
