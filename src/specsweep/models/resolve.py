"""Model resolution: references (local dir, hub id, packaged:<name>) -> what the engine loads (`ResolvedModels`).

Which weights a backend loads is its declaration's `weights_format`: "hf" (the default: a Hugging Face model dir or hub
id; packaged models converted once to bf16 safetensors) or "gguf" (one GGUF file; packaged models as their verified
joined GGUF, unconverted).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Optional

from specsweep.methods import method_spec
from specsweep.models import packaged


@dataclass
class ResolvedModels:
    """Local paths (or hub ids) of everything the run loads, after packaged/registry names are resolved."""

    target: str
    draft: Optional[str] = None


def draft_reference(cfg) -> Optional[str]:
    """The proposer weights a run uses: speculation.draft_model, else the model entry's recommendation."""
    row = method_spec(cfg.speculation.method)
    if not row.takes_weights:
        return None
    if cfg.speculation.draft_model:
        return cfg.speculation.draft_model
    return cfg.model.draft if row.proposer == "draft" else cfg.model.heads.get(row.name)


HF, GGUF = "hf", "gguf"
GGUF_MAGIC = b"GGUF"


def weights_format(cfg) -> str:
    """The weights the selected backend loads: its declaration's `weights_format` ("hf" unless it says otherwise)."""
    return getattr(type(cfg.backend), "weights_format", HF)


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or ref.count("/") != 1 or Path(ref).exists()


def _packaged_problem(name: str, weights: str) -> Optional[str]:
    if name not in packaged.PACKAGED_MODELS:
        return f"a packaged model: {', '.join(packaged.PREFIX + n for n in packaged.PACKAGED_MODELS)}"
    model = packaged.PACKAGED_MODELS[name]
    # Cheap: file sizes only (the sha256 is checked when it is resolved for loading).
    if weights == GGUF:
        state, detail = packaged.gguf_state(model)
        if state == packaged.CORRUPT:
            return f"an intact packaged model ({packaged.gguf_corrupt_message(model, detail)})"
    else:
        state, detail = packaged.cache_state(model, hash_files=False)
        if state == packaged.CORRUPT:
            return f"an intact packaged model ({packaged.corrupt_message(model, detail)})"
    if state != packaged.READY and (missing := packaged.missing_wheels(model)):
        return f"a prepared packaged model (model wheel missing: {missing[0]}; run: bash scripts/setup.sh)"
    return None


def _gguf_file_problem(path: Path) -> Optional[str]:
    what = "a GGUF file (*.gguf) on this backend"
    if path.is_dir():
        return f"{what}, not a directory"
    if path.suffix != ".gguf":
        return f"{what} (this path does not end in .gguf)"
    if not path.is_file():
        return f"{what} (this path does not exist)"
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            return f"{what} (this file does not start with the GGUF magic bytes)"
    return None


def reference_problem(ref: str, weights: str = HF) -> Optional[str]:
    """Why `ref` cannot be loaded here as `weights` ("hf" or "gguf"; None if it can), checked without loading."""
    if ref.startswith(packaged.PREFIX):
        return _packaged_problem(ref[len(packaged.PREFIX) :], weights)
    if weights == GGUF:
        return _gguf_file_problem(Path(ref).expanduser())
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            return "an existing model directory (this path does not exist)"
        if not (path / "config.json").is_file():
            return "a model directory with a config.json"
        return None
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(ref, "config.json"), str):
            return "a local directory or a hub id already in the HF cache (HF_HUB_OFFLINE=1)"
    return None


def resolve(ref: str, prepare: bool = True, weights: str = HF) -> str:
    """A loadable path or hub id; packaged models are verified (converted on first use, or for "gguf" joined on
    first use) when `prepare`."""
    if ref.startswith(packaged.PREFIX):
        model = packaged.PACKAGED_MODELS[ref[len(packaged.PREFIX) :]]
        if weights == GGUF:
            return str(packaged.ensure_gguf(model)[0] if prepare else packaged.gguf_path(model))
        return str(packaged.convert(model) if prepare else packaged.converted_dir(model))
    if weights == GGUF or _looks_like_path(ref):
        return str(Path(ref).expanduser().resolve())
    return ref


def resolve_models(cfg, prepare: bool = True) -> ResolvedModels:
    draft, weights = draft_reference(cfg), weights_format(cfg)
    return ResolvedModels(
        target=resolve(cfg.model.target, prepare, weights), draft=resolve(draft, prepare, weights) if draft else None
    )


# --- GGUF headers ---------------------------------------------------------------------------------------------------

# GGUF metadata value types (gguf.h: enum gguf_type) -> struct format; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _value(f: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return f.read(_read(f, "<Q")).decode("utf-8", "replace")
    if kind == _ARRAY:
        item, count = _read(f, "<I"), _read(f, "<Q")
        if item in _SCALARS:  # skipped whole: nothing asked of it is an array
            f.seek(count * struct.calcsize(_SCALARS[item]), os.SEEK_CUR)
            return None
        for _ in range(count):
            _value(f, item)
        return None
    if kind not in _SCALARS:
        raise ValueError(f"unknown GGUF value type {kind}")
    return _read(f, _SCALARS[kind])


def gguf_value(path: str, key_suffix: str) -> Any:
    """The first metadata value of the GGUF file at `path` whose key ends with `key_suffix` (e.g.
    ".nextn_predict_layers" matches "glm4moe.nextn_predict_layers"), None if there is none. Reads the header only."""
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        _read(f, "<I")  # version
        _read(f, "<Q")  # tensor count
        for _ in range(_read(f, "<Q")):
            key = f.read(_read(f, "<Q")).decode("utf-8", "replace")
            value = _value(f, _read(f, "<I"))
            if key.endswith(key_suffix):
                return value
    return None
