"""python -m specsweep.models prepare: join, verify and convert the packaged models (once; later runs are no-ops)."""

from __future__ import annotations

import sys
import time

from specsweep.models.packaged import PACKAGED_MODELS, PackagedModelError, convert, is_converted


def main(argv) -> int:
    if argv != ["prepare"]:
        print("usage: python -m specsweep.models prepare", file=sys.stderr)
        return 2
    for model in PACKAGED_MODELS.values():
        if is_converted(model):
            print(f"{model.name}: ready (cached)")
            continue
        start = time.perf_counter()
        try:
            path = convert(model)
        except PackagedModelError as err:
            print(f"specsweep: {err}", file=sys.stderr)
            return 1
        print(f"{model.name}: sha256 verified, converted to bf16 in {time.perf_counter() - start:.0f} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
