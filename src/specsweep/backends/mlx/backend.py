"""mlx-lm engine: stream_generate with an optional draft model; acceptance from each token's from_draft flag."""

from __future__ import annotations

import platform
import time
from typing import Any, Callable, Dict, List, Optional

import mlx.core as mx
import mlx_lm
from mlx_lm import load as mlx_load
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler

from specsweep.backends.base import Backend
from specsweep.backends.mlx.mapping import acceptance_from_flags
from specsweep.core import Generation, Prompt
from specsweep.models.resolve import ResolvedModels

# Session slot: models stay loaded from job to job in one process (a basic-launcher sweep); a target and its draft fit.
MODELS = "mlx.models"


def _load(path: str, dtype: Optional[str]):
    model, tokenizer = mlx_load(path)
    if dtype is not None:
        model.set_dtype(getattr(mx, dtype))
    return model, tokenizer


class MlxBackend(Backend):
    name = "mlx"

    def __init__(self, cfg, native: Dict[str, Any], models: ResolvedModels, session):
        super().__init__(cfg, native, models, session)
        self.model = self.draft = None

    def _model(self, path: str):
        dtype = None if self.settings.dtype is None else str(self.settings.dtype)
        slot = self.session.slot(MODELS, capacity=2, close=lambda _: mx.clear_cache())
        return slot.get_or_create((path, dtype), lambda: _load(path, dtype))

    def load(self) -> None:
        if self.settings.device is not None:
            mx.set_default_device(getattr(mx, str(self.settings.device)))
        self.model, self.tokenizer = self._model(self.models.target)
        if self.method == "draft_model":
            self.draft, _ = self._model(self.models.draft)
        mx.reset_peak_memory()

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        return [self._generate_one(p) for p in prompts]

    def _generate_one(self, prompt: Prompt) -> Generation:
        ids = self.encode(prompt)
        kwargs = dict(self.native["stream_generate"])
        if self.draft is None:
            kwargs.pop("num_draft_tokens", None)
        sampler = make_sampler(**self.native["sampler"])
        mx.random.seed(self.native["seed"])
        tokens: List[int] = []
        flags: List[bool] = []
        first = None
        start = time.perf_counter()
        for response in stream_generate(
            self.model, self.tokenizer, ids, draft_model=self.draft, sampler=sampler, **kwargs
        ):
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

    def forward_timers(self, prompt: Prompt, n_max: int) -> Dict[Any, Callable[[], float]]:
        ids = mx.array(self.encode(prompt))
        timers = {n: self._forward_timer(self.model, ids, n) for n in range(1, n_max + 1)}
        if self.draft is not None:
            timers["draft"] = self._forward_timer(self.draft, ids, 1)
        return timers

    @staticmethod
    def _forward_timer(model, ids, n: int):
        """A callable timing one forward over n new tokens after the prompt's cached context, evaluated (mlx is
        lazy); the cache is trimmed back after each, so every forward sees the same context length."""
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        new = ids[:n] if n <= ids.shape[0] else mx.repeat(ids[:1], n)  # which tokens does not change the cost
        cache = make_prompt_cache(model)
        mx.eval(model(ids[None], cache=cache))

        def timed() -> float:
            start = time.perf_counter()
            mx.eval(model(new[None], cache=cache))
            seconds = time.perf_counter() - start
            trim_prompt_cache(cache, n)
            return seconds

        return timed

    def peak_memory(self) -> Dict[str, Any]:
        return {
            "peak_memory_mb": mx.get_peak_memory() / 2**20,
            "peak_memory_source": "mlx.core.get_peak_memory() since this engine loaded (mlx allocations only)",
            "peak_memory_per_device_mb": {str(mx.default_device()): mx.get_peak_memory() / 2**20},
        }

    def environment(self) -> Dict[str, Any]:
        return {
            "engine": "mlx-lm",
            "mlx_lm": mlx_lm.__version__,
            "mlx": mx.__version__,
            "device": str(mx.default_device()),
            "dtype": str(self.settings.dtype) if self.settings.dtype else "checkpoint",
            "machine": platform.machine(),
        }

    def close(self) -> None:
        self.model = self.draft = self.tokenizer = None
