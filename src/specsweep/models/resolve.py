"""Model resolution: references (local dir, hub id, packaged:<name>) -> what the engine loads (`ResolvedModels`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or ref.count("/") != 1 or Path(ref).exists()


def reference_problem(ref: str) -> Optional[str]:
    """Why `ref` cannot be loaded here (None if it can), checked without loading anything."""
    if ref.startswith(packaged.PREFIX):
        name = ref[len(packaged.PREFIX) :]
        if name not in packaged.PACKAGED_MODELS:
            return f"a packaged model: {', '.join(packaged.PREFIX + n for n in packaged.PACKAGED_MODELS)}"
        model = packaged.PACKAGED_MODELS[name]
        # Cheap: file sizes only (the sha256 is checked when it is resolved for loading).
        state, detail = packaged.cache_state(model, hash_files=False)
        if state == packaged.CORRUPT:
            return f"an intact packaged model ({packaged.corrupt_message(model, detail)})"
        if state != packaged.READY and (missing := packaged.missing_wheels(model)):
            return f"a prepared packaged model (model wheel missing: {missing[0]}; run: bash scripts/setup.sh)"
        return None
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


def resolve(ref: str, prepare: bool = True) -> str:
    """A loadable path or hub id; packaged models are verified (converted on first use) when `prepare`."""
    if ref.startswith(packaged.PREFIX):
        model = packaged.PACKAGED_MODELS[ref[len(packaged.PREFIX) :]]
        return str(packaged.convert(model) if prepare else packaged.converted_dir(model))
    if _looks_like_path(ref):
        return str(Path(ref).expanduser().resolve())
    return ref


def resolve_models(cfg, prepare: bool = True) -> ResolvedModels:
    draft = draft_reference(cfg)
    return ResolvedModels(target=resolve(cfg.model.target, prepare), draft=resolve(draft, prepare) if draft else None)
