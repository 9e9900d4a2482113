"""mlx-lm engine: stream_generate with an optional draft model; acceptance from each token's from_draft flag."""

from __future__ import annotations

import platform
import time
from typing import Any, Dict, List, Optional, Tuple

import mlx.core as mx
import mlx_lm
from mlx_lm import load as mlx_load
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler

from specsweep.backends.base import Generation, Prompt, ResolvedModels
from specsweep.backends.mlx.mapping import acceptance_from_flags

# Models stay loaded from job to job in one process (a basic-launcher sweep), keyed by (path, dtype).
_loaded: Dict[Tuple[str, Optional[str]], Any] = {}


def _load(path: str, dtype: Optional[str]):
    key = (path, dtype)
    if key not in _loaded:
        model, tokenizer = mlx_load(path)
        if dtype is not None:
            model.set_dtype(getattr(mx, dtype))
        _loaded[key] = (model, tokenizer)
    return _loaded[key]


def release_all_except(keep: set) -> None:
    for key in [k for k in _loaded if k not in keep]:
        del _loaded[key]
    mx.clear_cache()


class MlxBackend:
    name = "mlx"

    def __init__(self, cfg, native: Dict[str, Any], models: ResolvedModels):
        self.cfg = cfg.backend
        self.generation = cfg.generation
        self.method = cfg.speculation.method
        self.native = native
        self.models = models
        self.model = self.draft = self.tokenizer = None

    def load(self) -> None:
        if self.cfg.device is not None:
            mx.set_default_device(getattr(mx, self.cfg.device))
        keep = {(self.models.target, self.cfg.dtype)}
        if self.method == "draft_model":
            keep.add((self.models.draft, self.cfg.dtype))
            release_all_except(keep)
        self.model, self.tokenizer = _load(self.models.target, self.cfg.dtype)
        if self.method == "draft_model":
            self.draft, _ = _load(self.models.draft, self.cfg.dtype)
        mx.reset_peak_memory()

    def _encode(self, prompt: Prompt) -> List[int]:
        if self.generation.chat_template and self.tokenizer.chat_template:
            return list(self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt.text}], add_generation_prompt=True, tokenize=True
            ))
        return self.tokenizer.encode(prompt.text)

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        return [self._generate_one(p) for p in prompts]

    def _generate_one(self, prompt: Prompt) -> Generation:
        ids = self._encode(prompt)
        kwargs = dict(self.native["stream_generate"])
        if self.draft is None:
            kwargs.pop("num_draft_tokens", None)
        sampler = make_sampler(**self.native["sampler"])
        mx.random.seed(self.native["seed"])
        tokens: List[int] = []
        flags: List[bool] = []
        first = None
        start = time.perf_counter()
        for response in stream_generate(self.model, self.tokenizer, ids, draft_model=self.draft, sampler=sampler, **kwargs):
            if first is None:
                first = time.perf_counter()
            tokens.append(response.token)
            flags.append(response.from_draft)
        end = time.perf_counter()
        acceptance = None
        if self.draft is not None:
            acceptance = acceptance_from_flags(flags, kwargs["num_draft_tokens"], kwargs["max_tokens"])
        return Generation(
            prompt_id=prompt.id,
            prompt_tokens=len(ids),
            output_ids=tokens,
            wall_s=end - start,
            ttft_s=(first - start) if first is not None else None,
            acceptance=acceptance,
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
        )

    def peak_memory(self) -> Dict[str, Any]:
        return {
            "peak_memory_mb": mx.get_peak_memory() / 2**20,
            "peak_memory_source": "mlx.core.get_peak_memory() since this engine loaded (mlx allocations only)",
        }

    def environment(self) -> Dict[str, Any]:
        return {
            "engine": "mlx-lm",
            "mlx_lm": mlx_lm.__version__,
            "mlx": mx.__version__,
            "device": str(mx.default_device()),
            "dtype": self.cfg.dtype or "checkpoint",
            "machine": platform.machine(),
        }

    def close(self) -> None:
        self.model = self.draft = self.tokenizer = None
