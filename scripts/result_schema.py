"""Generate result.json's JSON Schema (docs/result.schema.json) and the README's contract table from the types in
specsweep.results.types.

    python scripts/result_schema.py           # rewrite both
    python scripts/result_schema.py --check   # exit 1 if either is stale (tests/test_result_schema.py does the same)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from specsweep.results.schema import SCHEMA_PATH, readme_with_contract, result_schema, schema_text

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    schema = result_schema()
    schema_file, readme_file = REPO / SCHEMA_PATH, REPO / "README.md"
    readme = readme_file.read_text()
    wanted = {schema_file: schema_text(schema), readme_file: readme_with_contract(readme, schema)}
    stale = [path for path, text in wanted.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO)} is stale: run python scripts/result_schema.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
