"""Turn one sweep's W&B group into a W&B Report comparing its methods (speedup, J/token, acceptance by k and
by prompt category). Publishing needs `wandb login` and the sweep's runs on W&B (offline runs: `wandb sync` first).

    python scripts/wandb_report.py outputs/sweeps/2026-11-22_10-00-00 --entity me            # publish, print URL
    python scripts/wandb_report.py outputs/sweeps/2026-11-22_10-00-00 --dry-run              # print the structure
"""

import argparse
import sys
from pathlib import Path

from specsweep.report.data import load_jobs
from specsweep.report.wandb_report import build_report
from specsweep.tracking.wandb import sweep_group


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path, help="the sweep dir whose jobs were logged (its name is the W&B group)")
    parser.add_argument("--project", default="specsweep", help="W&B project the runs were logged to (logger.project)")
    parser.add_argument("--entity", help="W&B entity (default: your login's default entity)")
    parser.add_argument("--group", help="W&B group, if logger.group was set explicitly")
    parser.add_argument("--title", default="")
    parser.add_argument(
        "--dry-run", action="store_true", help="build the report and print its structure; publish nothing"
    )
    args = parser.parse_args(argv)
    try:
        jobs = load_jobs([args.sweep_dir])
    except FileNotFoundError as err:
        print(f"wandb_report: {err}", file=sys.stderr)
        return 2
    categories = sorted({str(r.get("category")) for j in jobs for r in j.per_prompt})
    max_k = max([j.k for j in jobs if j.k is not None] or [1])
    group = args.group or sweep_group(args.sweep_dir)
    entity = args.entity
    if entity is None and not args.dry_run:
        try:
            import wandb

            entity = wandb.Api().default_entity
        except Exception as err:
            print(f"wandb_report: publishing needs a W&B login (`wandb login`) or --entity: {err}", file=sys.stderr)
            return 2
    report = build_report(args.project, entity or "ENTITY", group, categories, max_k, args.title)
    if args.dry_run:
        print(f"report '{report.title}' for group {group} in {report.entity}/{report.project}:")
        for block in report.blocks:
            print(
                f"  {type(block).__name__}: "
                + ", ".join(f"{type(p).__name__}({p.title})" for p in getattr(block, "panels", []))
                or getattr(block, "text", "")
            )
        return 0
    try:
        report.save()
    except Exception as err:  # not logged in, no network, unknown entity/project
        print(
            f"wandb_report: could not publish ({type(err).__name__}: {err}); publishing needs `wandb login` "
            "and the runs synced (`wandb sync <sweep dir>/*/wandb/offline-run-*`)",
            file=sys.stderr,
        )
        return 2
    print(report.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
