"""Write a self-contained HTML comparison report for one or more sweeps.

python scripts/report.py outputs/sweeps/2026-11-22_10-00-00            # -> <sweep dir>/report.html
python scripts/report.py SWEEP_A SWEEP_B --out cmp.html --png-dir figs  # several sweeps; also save the PNGs
"""

import argparse
import sys
from pathlib import Path

from specsweep.report.html import write


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "sources", nargs="+", type=Path, help="sweep dirs (or any dir with a results.jsonl, or the file)"
    )
    parser.add_argument("--out", type=Path, help="HTML file to write (default: report.html in the first source dir)")
    parser.add_argument("--png-dir", type=Path, help="also write each figure as a PNG here")
    args = parser.parse_args(argv)
    first = args.sources[0]
    out = args.out or (first if first.is_dir() else first.parent) / "report.html"
    try:
        path = write(args.sources, out, args.png_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
