"""transformers engine: greedy/sampled generate(), assisted generation and prompt lookup, exact acceptance counts."""

from __future__ import annotations

import functools
import platform
import time
from typing import Any, Dict, List, Optional, Tuple

import psutil
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer

from specsweep.backends.base import AcceptanceCounts, Generation, Prompt, ResolvedModels

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# Loaded weights survive from job to job in one process (Hydra's basic launcher runs a sweep in one process),
# so a sweep over speculation settings loads each model once. Keyed by (path, dtype, device).
_loaded: Dict[Tuple[str, str, str], Any] = {}
_load_counts: Dict[Tuple[str, str, str], int] = {}


def _load(path: str, dtype: str, device: str):
    key = (path, dtype, device)
    if key not in _loaded:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype]).to(device).eval()
        _instrument(model)
        _loaded[key] = model
        _load_counts[key] = _load_counts.get(key, 0) + 1
    return _loaded[key]


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS tracks what a sweep really holds."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    return AutoTokenizer.from_pretrained(path)


def release_all_except(keep: set) -> None:
    """Drop cached models a new job does not need, so memory does not grow across a sweep."""
    for key in [k for k in _loaded if k not in keep]:
        del _loaded[key]
    _return_freed_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_counts() -> Dict[str, int]:
    """How many times each model was loaded in this process (sweep-efficiency benchmark)."""
    return {f"{path} [{dtype}, {device}]": n for (path, dtype, device), n in _load_counts.items()}


def _instrument(model) -> None:
    """Count drafted/accepted tokens per verification step by wrapping transformers' candidate generator.

    `_get_candidate_generator` is private API (transformers 5.x); the counts land in `model._specsweep_counts`
    while a speculative generate() runs and are None otherwise.
    """
    model._specsweep_counts = None
    original = model._get_candidate_generator

    def counting_candidate_generator(*args, **kwargs):
        generator = original(*args, **kwargs)
        get_candidates, update = generator.get_candidates, generator.update_candidate_strategy
        drafted = {"n": 0}

        def get_candidates_counted(input_ids, *a, **kw):
            candidate_ids, candidate_logits = get_candidates(input_ids, *a, **kw)
            drafted["n"] = candidate_ids.shape[1] - input_ids.shape[1]
            return candidate_ids, candidate_logits

        def update_counted(input_ids, scores, num_matches):
            if model._specsweep_counts is not None:
                model._specsweep_counts.record_step(drafted["n"], int(num_matches))
            return update(input_ids, scores, num_matches)

        generator.get_candidates = get_candidates_counted
        generator.update_candidate_strategy = update_counted
        return generator

    model._get_candidate_generator = counting_candidate_generator


class _FirstTokenTimer(BaseStreamer):
    """Records when the first generated token arrives (the first put() is the prompt)."""

    def __init__(self):
        self.puts = 0
        self.first_token_at: Optional[float] = None

    def put(self, value):
        self.puts += 1
        if self.puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self):
        pass


class PytorchBackend:
    name = "pytorch"

    def __init__(self, cfg, native: Dict[str, Any], models: ResolvedModels):
        self.cfg = cfg.backend
        self.generation = cfg.generation
        self.method = cfg.speculation.method
        self.native = native
        self.models = models
        self.model = None
        self.assistant = None
        self.tokenizer = None

    def model_keys(self) -> set:
        keys = {(self.models.target, self.cfg.dtype, self.cfg.device)}
        if self.method == "draft_model":
            keys.add((self.models.draft, self.cfg.dtype, self.cfg.device))
        return keys

    def load(self) -> None:
        if self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)
        if self.method != "none":
            release_all_except(self.model_keys())
        self.tokenizer = _tokenizer(self.models.target)
        self.model = _load(self.models.target, self.cfg.dtype, self.cfg.device)
        if self.method == "draft_model":
            self.assistant = _load(self.models.draft, self.cfg.dtype, self.cfg.device)

    def _encode(self, prompt: Prompt) -> torch.Tensor:
        if self.generation.chat_template and self.tokenizer.chat_template:
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt.text}], add_generation_prompt=True, return_dict=True, return_tensors="pt"
            )["input_ids"]
        else:
            ids = self.tokenizer(prompt.text, return_tensors="pt")["input_ids"]
        return ids.to(self.cfg.device)

    def _sync(self) -> None:
        if self.cfg.device.startswith("cuda"):
            torch.cuda.synchronize()

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        return [self._generate_one(p) for p in prompts]

    def _generate_one(self, prompt: Prompt) -> Generation:
        input_ids = self._encode(prompt)
        kwargs = dict(self.native["generate_kwargs"])
        if self.assistant is not None:
            for key, value in self.native["assistant_generation_config"].items():
                setattr(self.assistant.generation_config, key, value)
            kwargs["assistant_model"] = self.assistant
        counts = AcceptanceCounts() if self.method != "none" else None
        self.model._specsweep_counts = counts
        timer = _FirstTokenTimer()
        torch.manual_seed(self.generation.seed)
        self._sync()
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                    streamer=timer,
                    **kwargs,
                )
            self._sync()
            end = time.perf_counter()
        finally:
            self.model._specsweep_counts = None
        new_ids = output[0, input_ids.shape[1] :].tolist()
        return Generation(
            prompt_id=prompt.id,
            prompt_tokens=int(input_ids.shape[1]),
            output_ids=new_ids,
            wall_s=end - start,
            ttft_s=(timer.first_token_at - start) if timer.first_token_at else None,
            acceptance=counts,
            text=self.tokenizer.decode(new_ids, skip_special_tokens=True),
        )

    def environment(self) -> Dict[str, Any]:
        return {
            "engine": "transformers",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "dtype": self.cfg.dtype,
            "device": self.cfg.device,
            "cuda_device": torch.cuda.get_device_name(0) if self.cfg.device.startswith("cuda") else None,
            "machine": platform.machine(),
            "model_loads": load_counts(),
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
        }

    def close(self) -> None:
        self.model = self.assistant = None
        _return_freed_memory()
