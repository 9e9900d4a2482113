"""What `python main.py` does before Hydra takes over: the support matrix, and one-line config errors (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, NoReturn

# Flags after which Hydra itself must handle the command line (help, sweeps, config printing, completion).
HYDRA_FLAGS = (
    "-m",
    "--multirun",
    "-h",
    "--help",
    "--hydra-help",
    "-i",
    "--info",
    "-c",
    "--cfg",
    "-p",
    "--package",
    "-sc",
    "--shell-completion",
    "--version",
    "-cp",
    "--config-path",
    "-cn",
    "--config-name",
    "-cd",
    "--config-dir",
)


def fail(message: str) -> NoReturn:
    print(f"specsweep: config error: {message}", file=sys.stderr)
    sys.exit(2)


def print_support_matrix() -> None:
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    from specsweep.backends import support_matrix
    from specsweep.methods import METHODS

    matrix = support_matrix()
    table = Table(title="speculation.method x backend (what specsweep maps; the engine must be installed to run it)")
    table.add_column("method")
    for backend in matrix:
        table.add_column(backend, justify="center")
    for method in METHODS:
        table.add_row(method, *["yes" if method in methods else "-" for methods in matrix.values()])
    # At its natural width at least: a console narrower than the table (80 columns when piped) cuts names short.
    wide = Console(width=10**4)
    needed = Measurement.get(wide, wide.options, table).maximum
    Console(width=max(Console().width, needed)).print(table)


def precheck(conf_dir: Path, argv: List[str], session) -> List[str]:
    """Handle --support-matrix and --dry-run; compose and validate a single run so bad input fails in one line
    before Hydra creates anything. Returns the argv Hydra should see."""
    if "--support-matrix" in argv:
        print_support_matrix()
        sys.exit(0)
    argv = ["dry_run=true" if a == "--dry-run" else a for a in argv]
    refuse_literal_secrets(argv)
    run_valid = "--run-valid" in argv
    argv = [a for a in argv if a != "--run-valid"]
    other_flags = [a for a in argv if a.split("=")[0] in HYDRA_FLAGS and a not in ("-m", "--multirun")]
    if any(a in ("-m", "--multirun") for a in argv) and not run_valid and not other_flags:
        check_grid(conf_dir, argv, session)
    if any(a.startswith(("hparams_search=", "+hparams_search=", "hydra/sweeper=optuna")) for a in argv):
        Path("outputs/optuna").mkdir(parents=True, exist_ok=True)  # the studies' SQLite files live here
    if any(a.split("=")[0] in HYDRA_FLAGS for a in argv):
        return argv
    cfg = check_overrides(conf_dir, [a for a in argv if not a.startswith(("hydra.", "hydra/"))], session)
    if cfg.dry_run:  # a single dry run needs no Hydra job: print the native config, create nothing
        from specsweep.app import dry_run

        dry_run(cfg, session)
        sys.exit(0)
    return argv


def refuse_literal_secrets(argv: List[str]) -> None:
    """A secret-looking override with a literal value would be saved verbatim by Hydra (.hydra/overrides.yaml,
    config.yaml, multirun.yaml): ask for the environment-variable form, which Hydra saves unresolved."""
    from specsweep.results.redact import is_secret

    for arg in argv:
        key, sep, value = arg.partition("=")
        if arg.startswith("-") or not sep or not value or "${" in value or not is_secret(key.split(".")[-1]):
            continue
        try:
            float(value)  # a number is a setting, not a secret (results.redact keeps numbers too)
        except ValueError:
            name = key.split(".")[-1].lstrip("+~").upper()
            fail(
                f"{key}=<redacted> is invalid: expected the environment-variable form {key}='${{oc.env:{name}}}' "
                "(a literal secret on the command line would be saved verbatim under .hydra/)"
            )


def check_grid(conf_dir: Path, argv: List[str], session) -> None:
    """A grid sweep's jobs are known before the first runs: validate them all, report every invalid one (exit 2).
    Sweeps whose jobs a sweeper chooses (hparams_search, another hydra/sweeper) are validated job by job instead."""
    from specsweep.config.compose import compose_config
    from specsweep.config.validate import ConfigError, validate
    from specsweep.sweep import grid_jobs

    overrides = [a for a in argv if not a.startswith("-") and not a.startswith(("hydra.", "hydra/"))]
    if any(a.split("=")[0].lstrip("+~") in ("hparams_search", "hydra/sweeper") for a in argv):
        check_sweep_base(conf_dir, argv)
        return
    invalid = []
    jobs = grid_jobs(overrides)
    for number, job in enumerate(jobs):
        try:
            validate(compose_config(job, conf_dir), session)
        except ConfigError as err:
            invalid.append(f"  job {number} [{','.join(job)}]: {err}")
    if invalid:
        print(
            f"specsweep: config error: {len(invalid)} of {len(jobs)} sweep jobs are invalid (nothing ran; "
            "--run-valid runs the valid ones and records the others as failed):\n" + "\n".join(invalid),
            file=sys.stderr,
        )
        sys.exit(2)


BEST_K = ("hparams_search=best_k", "hydra/sweeper=best_k")
K_BY_LOAD = ("hparams_search=k_by_load", "hydra/sweeper=k_by_load")


def check_sweep_base(conf_dir: Path, argv: List[str]) -> None:
    """A sweep whose jobs a sweeper chooses: what every job shares (the overrides that sweep nothing) must compose
    with no unknown key, and must be something the sweeper can tune, before the first job runs."""
    from specsweep.config.compose import compose_config
    from specsweep.config.validate import ConfigError

    fixed = [a for a in argv if not a.startswith("-") and not a.startswith(("hydra.", "hydra/"))]
    fixed = [a for a in fixed if not any(c in a.split("=", 1)[-1] for c in ",()")]  # sweep expressions
    try:
        cfg = compose_config(fixed, conf_dir)
    except ConfigError as err:
        fail(str(err))
    tuner = next((a.lstrip("+") for a in argv if a.lstrip("+") in BEST_K + K_BY_LOAD), None)
    if tuner and cfg.speculation.method == "none":
        fail(
            f"speculation.method='none' is invalid: expected a speculative method for {tuner} "
            "(it tunes k), e.g. speculation=draft_model or speculation=ngram"
        )
    if tuner in K_BY_LOAD and cfg.backend.load_identity(cfg.generation).get("concurrency") is None:
        fail(
            f"backend={cfg.backend.name} is invalid: expected a served backend for {tuner} (it tunes k per "
            "concurrency level), e.g. backend=llamacpp_server or backend=vllm_server"
        )


def check_overrides(conf_dir: Path, overrides: List[str], session):
    """The composed, validated config of a single run; exit 2 with one line if it is invalid."""
    from specsweep.config.compose import compose_config
    from specsweep.config.validate import ConfigError, validate

    try:
        cfg = compose_config(overrides, conf_dir)
        validate(cfg, session)
        return cfg
    except ConfigError as err:
        fail(str(err))
