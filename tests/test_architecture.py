"""The architecture rules, checked on the source (docs/extending.md states them for backends): every module of src/
imports on its own in a fresh interpreter; a backend imports nothing of the measurement, the results or the tracking,
and no other backend package; core.py, the ground floor, imports nothing of specsweep; no two top-level packages import
each other; no function is longer than 50 lines.

The import rules read the source with `ast`: every import statement counts, those inside functions too. The backend
registry's `importlib.import_module` of dotted strings is no import statement, so it does not count: that lazy import is
how the registry reaches the backend declarations without importing them back."""

from __future__ import annotations

import ast
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
SPECSWEEP = SRC / "specsweep"
BACKENDS = SPECSWEEP / "backends"
MAX_FUNCTION_LINES = 50


def source_files() -> list[Path]:
    return sorted([*SPECSWEEP.rglob("*.py"), *(SRC / "hydra_plugins").rglob("*.py")])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int]]:
    """(dotted name, line) for every name an import statement in `path` brings in, anywhere in the file: `import a.b`
    gives a.b, `from a import b` gives a.b (b may be a module or a name in a: either way a.b is under a)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


def top_level(name: str) -> str | None:
    """The top-level package or module of src/ a dotted name is in: specsweep.measure.theory -> specsweep.measure,
    hydra_plugins.specsweep_optuna_sweeper._impl -> hydra_plugins.specsweep_optuna_sweeper; None outside src/."""
    parts = name.split(".")
    if parts[0] not in ("specsweep", "hydra_plugins") or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def import_graph() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) top-level units of src/ -> where the importer imports the other one."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in source_files():
        here = top_level(module_name(path))
        for name, line in imports(path):
            there = top_level(name)
            if here and there and there != here:
                places = edges.setdefault((here, there), [])
                if where(path, line) not in places:  # `from a import b, c` is one place
                    places.append(where(path, line))
    return edges


# --- every module imports on its own ---------------------------------------------------------------------------------

# Run in a fresh interpreter per module. A module that needs an optional dependency this machine lacks (tensorrt_llm
# off NVIDIA machines, say) is not held against the rule: what the rule is after is an import cycle or a module that
# works only after some other module of ours was imported first.
IMPORT_ALONE = """
import importlib, importlib.util, sys
try:
    importlib.import_module(sys.argv[1])
except ModuleNotFoundError as e:
    top = (e.name or "").split(".")[0]
    if not top or top in ("specsweep", "hydra_plugins") or importlib.util.find_spec(top) is not None:
        raise
    print("optional dependency not installed:", e.name)
"""


def import_alone(module: str, cwd: Path) -> tuple[str, int, str]:
    path = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # this tree's src/ first
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ALONE, module], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return module, proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]


def test_every_module_imports_on_its_own_in_a_fresh_interpreter(tmp_path):
    modules = [module_name(p) for p in source_files()]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        outcomes = list(pool.map(lambda m: import_alone(m, tmp_path), modules))
    failed = [f"python -c 'import {m}': {err}" for m, rc, err in outcomes if rc != 0]
    print(f"{len(modules)} modules imported one by one in {time.perf_counter() - start:.1f} s")
    assert not failed, f"{len(failed)} of {len(modules)} modules do not import on their own:\n" + "\n".join(failed)


# --- import rules, read from the source ------------------------------------------------------------------------------


def test_backends_never_import_the_measurement_the_results_or_the_tracking():
    forbidden = ("specsweep.measure", "specsweep.results", "specsweep.tracking")
    found = [
        f"{where(path, line)} imports {name}"
        for path in sorted(BACKENDS.rglob("*.py"))
        for name, line in imports(path)
        if any(under(name, f) for f in forbidden)
    ]
    assert not found, "a backend imports the measurement, the results or the tracking:\n" + "\n".join(found)


def test_core_imports_nothing_of_specsweep():
    path = SPECSWEEP / "core.py"
    found = [f"{where(path, line)} imports {name}" for name, line in imports(path) if under(name, "specsweep")]
    assert not found, "core.py is the ground floor and imports nothing of specsweep:\n" + "\n".join(found)


def test_a_backend_package_never_imports_another_backend_package():
    # backends/<name>/ is a backend; the modules directly in backends/ (the registry, base.py, served.py, ...) are
    # what every backend shares.
    packages = sorted(p.name for p in BACKENDS.iterdir() if p.is_dir() and any(p.glob("*.py")))  # namespace ones too
    assert packages, f"no backend packages under {BACKENDS}"
    found = [
        f"{where(path, line)} imports {name}"
        for own in packages
        for path in sorted((BACKENDS / own).rglob("*.py"))
        for name, line in imports(path)
        for other in packages
        if other != own and under(name, f"specsweep.backends.{other}")
    ]
    assert not found, "a backend package imports another one:\n" + "\n".join(found)


def test_no_two_top_level_packages_import_each_other():
    edges = import_graph()
    mutual = sorted((a, b) for a, b in edges if a < b and (b, a) in edges)
    lines = [f"{a} <-> {b}: {', '.join(edges[a, b])} | {', '.join(edges[b, a])}" for a, b in mutual]
    assert not mutual, f"{len(mutual)} pair(s) of packages import each other:\n" + "\n".join(lines)


# --- no function over 50 lines ---------------------------------------------------------------------------------------


def test_no_function_in_src_is_longer_than_50_lines():
    long = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # from `def` to its last line: decorators not counted
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{where(path, node.lineno)} {node.name}: {length} lines")
    assert not long, f"{len(long)} functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_the_import_reader_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    pkg = tmp_path / "specsweep" / "backends" / "toy"
    pkg.mkdir(parents=True)
    (pkg / "backend.py").write_text(
        "import os\nfrom . import mapping\nfrom ..base import Backend\n\n\n"
        "def f():\n    from specsweep.measure import theory\n    import specsweep.results.store\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert sorted(imports(pkg / "backend.py")) == [
        ("os", 1),
        ("specsweep.backends.base.Backend", 3),
        ("specsweep.backends.toy.mapping", 2),
        ("specsweep.measure.theory", 7),
        ("specsweep.results.store", 8),
    ]
