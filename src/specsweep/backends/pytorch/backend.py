"""transformers engine: greedy/sampled generate(), assisted generation and prompt lookup, exact acceptance counts."""

from __future__ import annotations

import platform
import random
import time
from typing import Any, Callable, Dict, List, Optional

import psutil
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from specsweep.backends.base import Backend
from specsweep.backends.pytorch.device import accelerator_for
from specsweep.core import AcceptanceCounts, Generation, Prompt
from specsweep.models.resolve import ResolvedModels

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# Session slots: loaded weights and tokenizers survive from job to job in one process (Hydra's basic launcher runs a
# sweep in one process), so a sweep over speculation settings loads each model once. A target and its draft fit.
MODELS = "pytorch.models"
TOKENIZERS = "pytorch.tokenizers"


def _return_freed_memory(_evicted=None) -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS tracks what a sweep really holds."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _load_model(path: str, dtype: str, device: str):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype]).to(device).eval()
    _instrument(model)
    return model


def load_counts(session) -> Dict[str, int]:
    """How many times each model was loaded in this process (sweep-efficiency benchmark)."""
    created = session.slot(MODELS, capacity=2, close=_return_freed_memory).created
    return {f"{path} [{dtype}, {device}]": n for (path, dtype, device), n in created.items()}


def leading_matches(drafted: List[int], appended: List[int]) -> int:
    """How many drafted tokens were accepted: the leading ones equal to the tokens the target appended there."""
    accepted = 0
    for draft, kept in zip(drafted, appended):
        if draft != kept:
            break
        accepted += 1
    return accepted


def _instrument(model) -> None:
    """Count drafted/accepted tokens per verification step by wrapping transformers' candidate generator.

    Accepted means one thing on every backend: a drafted token equal to the token the target appended at that position
    (vLLM's definition). transformers' own `num_matches` is recomputed after it crops the step at EOS or the length
    limit, so a correctly drafted EOS would count as the bonus token instead; comparing the drafted tokens with the
    tokens actually appended avoids that. `_get_candidate_generator` is private API (transformers 5.x); the counts
    land in `model._specsweep_counts` while a speculative generate() runs and are None otherwise.
    """
    model._specsweep_counts = None
    model._specsweep_verifier = None
    original = model._get_candidate_generator

    def counting_candidate_generator(*args, **kwargs):
        generator = original(*args, **kwargs)
        get_candidates, update = generator.get_candidates, generator.update_candidate_strategy
        step = {"start": 0, "drafted": [], "verifying": False}
        if model._specsweep_verifier is not None:
            model._specsweep_verifier.step = step

        def get_candidates_counted(input_ids, *a, **kw):
            step["verifying"] = False  # the draft's own generate() may run logits processors too
            candidate_ids, candidate_logits = get_candidates(input_ids, *a, **kw)
            step["start"] = input_ids.shape[1]
            step["drafted"] = candidate_ids[0, input_ids.shape[1] :].tolist()
            step["verifying"] = True  # the next logits-processor calls are the target's, over these candidates
            return candidate_ids, candidate_logits

        def update_counted(input_ids, scores, num_matches):  # input_ids now holds the tokens this step appended
            step["verifying"] = False
            if model._specsweep_counts is not None:
                drafted, start = step["drafted"], step["start"]
                appended = input_ids[0, start : start + len(drafted) + 1].tolist()
                model._specsweep_counts.record_step(len(drafted), leading_matches(drafted, appended))
            return update(input_ids, scores, num_matches)

        generator.get_candidates = get_candidates_counted
        generator.update_candidate_strategy = update_counted
        return generator

    model._get_candidate_generator = counting_candidate_generator


class SyntheticVerifier:
    """A logits processor (speculation.synthetic_acceptance) that decides each drafted token at verification instead
    of the target: accepted with probability alpha, independently of the others, so position i is accepted with
    probability alpha^i; a rejected position gets the target's own choice, or its runner-up where that is the drafted
    token. transformers' assisted decoding runs the processors over the target's logits at every verified position
    (generation/utils.py, `_assisted_decoding`), after the target's real forward, so the draft's and the target's
    costs stay real and only the decision is set. `step` is the candidate generator's state (`_instrument`)."""

    def __init__(self, alpha: float, seed: int):
        self.alpha = alpha
        self.rng = random.Random(seed)
        self.step: Optional[Dict[str, Any]] = None

    def __call__(self, input_ids, scores):
        step = self.step
        if step is None or not step["verifying"]:
            return scores
        position = input_ids.shape[1] - step["start"]
        if position >= len(step["drafted"]):
            return scores  # the bonus position: the target's own next token
        token = step["drafted"][position]
        if self.rng.random() < self.alpha:
            forced = torch.full_like(scores, float("-inf"))
            forced[:, token] = 0.0
            return forced
        if int(scores[0].argmax()) == token:
            scores = scores.clone()
            scores[:, token] = float("-inf")
        return scores


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


class PytorchBackend(Backend):
    name = "pytorch"

    def __init__(self, cfg, native: Dict[str, Any], models: ResolvedModels, session):
        super().__init__(cfg, native, models, session)
        self.device = self.settings.device
        self.accelerator = accelerator_for(self.device)
        self.model = None
        self.assistant = None
        synthetic = native.get("synthetic_acceptance")
        self.verifier = SyntheticVerifier(synthetic["alpha"], synthetic["seed"]) if synthetic else None

    def _model(self, path: str):
        key = (path, str(self.settings.dtype), self.device)
        models = self.session.slot(MODELS, capacity=2, close=_return_freed_memory)
        return models.get_or_create(key, lambda: _load_model(path, str(self.settings.dtype), self.device))

    def load(self) -> None:
        if self.settings.num_threads:
            torch.set_num_threads(self.settings.num_threads)
        tokenizers = self.session.slot(TOKENIZERS, capacity=4)
        self.tokenizer = tokenizers.get_or_create(
            self.models.target, lambda: AutoTokenizer.from_pretrained(self.models.target)
        )
        self.model = self._model(self.models.target)
        if self.method == "draft_model":
            self.assistant = self._model(self.models.draft)
        self.accelerator.reset_peak_memory()

    def synchronize(self) -> None:
        self.accelerator.synchronize()

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        return [self._generate_one(p) for p in prompts]

    def _generate_kwargs(self) -> Dict[str, Any]:
        kwargs = dict(self.native["generate_kwargs"])
        if self.assistant is not None:
            for key, value in self.native["assistant_generation_config"].items():
                setattr(self.assistant.generation_config, key, value)
            kwargs["assistant_model"] = self.assistant
        if self.verifier is not None:
            kwargs["logits_processor"] = LogitsProcessorList([self.verifier])
        return kwargs

    def _generate_one(self, prompt: Prompt) -> Generation:
        input_ids = torch.tensor([self.encode(prompt)], device=self.device)
        kwargs = self._generate_kwargs()
        counts = AcceptanceCounts() if self.method != "none" else None
        self.model._specsweep_counts = counts
        self.model._specsweep_verifier = self.verifier
        timer = _FirstTokenTimer()
        torch.manual_seed(self.generation.seed)
        self.synchronize()
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
            self.synchronize()
            end = time.perf_counter()
        finally:
            self.model._specsweep_counts = self.model._specsweep_verifier = None
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

    def timed_forwards(self, prompt: Prompt, n_max: int, repeats: int) -> Dict[Any, float]:
        with torch.inference_mode():
            return super().timed_forwards(prompt, n_max, repeats)

    def forward_timers(self, prompt: Prompt, n_max: int) -> Dict[Any, Callable[[], float]]:
        ids = torch.tensor([self.encode(prompt)], device=self.device)
        timers = {n: self._forward_timer(self.model, ids, n) for n in range(1, n_max + 1)}
        if self.assistant is not None:
            timers["draft"] = self._forward_timer(self.assistant, ids, 1)
        return timers

    def _forward_timer(self, model, ids, n: int):
        """A callable timing one forward over n new tokens after the prompt's cached context (the cache is cropped
        back after each, so every forward sees the same context length)."""
        context = ids.shape[1]
        new = ids[:, :n] if n <= context else ids[:, :1].repeat(1, n)  # which tokens does not change the cost
        with torch.inference_mode():
            cache = model(ids, use_cache=True).past_key_values

        def timed() -> float:
            self.synchronize()
            start = time.perf_counter()
            model(new, past_key_values=cache, use_cache=True)
            self.synchronize()
            seconds = time.perf_counter() - start
            cache.crop(-n)  # drop the n tokens just added
            return seconds

        return timed

    def peak_memory(self) -> Dict[str, Any]:
        return self.accelerator.peak_memory() or super().peak_memory()

    def environment(self) -> Dict[str, Any]:
        return {
            "engine": "transformers",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "dtype": str(self.settings.dtype),
            "device": self.device,
            **self.accelerator.describe(),
            "machine": platform.machine(),
            "model_loads": load_counts(self.session),
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
        }

    def close(self) -> None:
        self.model = self.assistant = None
        _return_freed_memory()
