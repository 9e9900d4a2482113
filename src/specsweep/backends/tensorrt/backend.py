"""TensorRT-LLM engine: builds LLM(...) from the native config, streams each request, reads iteration stats.

Not run on the machine this was written on (no NVIDIA GPU, no tensorrt_llm); the mapping it consumes is tested.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import platform
import time
from typing import Any, Dict, List, Optional

from specsweep.backends.base import Backend
from specsweep.core import AcceptanceCounts, Generation, Prompt
from specsweep.models.resolve import ResolvedModels


def _import(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def spec_stats(entries: List[Any]) -> Optional[AcceptanceCounts]:
    """Sum `specDecodingStats` over `llm.get_stats()` entries: drafted, accepted, request-steps with drafts."""
    counts = None
    for entry in entries:
        stats = (json.loads(entry) if isinstance(entry, str) else entry).get("specDecodingStats")
        if not stats:
            continue
        counts = counts or AcceptanceCounts()
        counts.drafted += int(stats["numDraftTokens"])
        counts.accepted += int(stats["numAcceptedTokens"])
        counts.num_drafts += int(stats["numRequestsWithDraftTokens"])
    return counts


class TensorrtBackend(Backend):
    name = "tensorrt"

    def __init__(self, cfg, native: Dict[str, Any], models: ResolvedModels, session):
        super().__init__(cfg, native, models, session)
        self.speculative = self.method != "none"
        self.llm = None
        self.sampling = None

    def synchronize(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def load(self) -> None:
        import tensorrt_llm

        kwargs = dict(self.native["llm"]["kwargs"])
        spec = self.native["speculative_config"]
        if spec is not None:
            kwargs["speculative_config"] = _import(spec["import"])(**spec["kwargs"])
        self.llm = _import(self.native["llm"]["import"])(**kwargs)
        self.sampling = tensorrt_llm.SamplingParams(**self.native["sampling_params"])
        self.tokenizer = self.llm.tokenizer

    async def _stream(self, ids: List[int]):
        start = time.perf_counter()
        first = None
        output = None
        async for output in self.llm.generate_async(ids, self.sampling, streaming=True):
            if first is None and output.outputs[0].token_ids:
                first = time.perf_counter()
        return output, start, first, time.perf_counter()

    async def _batch(self, inputs: List[List[int]]):
        return await asyncio.gather(*(self._stream(ids) for ids in inputs))

    def generate(self, prompts: List[Prompt]) -> List[Generation]:
        inputs = [self.encode(p) for p in prompts]
        self._drain_stats()
        results = asyncio.run(self._batch(inputs))
        # Iteration stats count the whole batch; exact per prompt when the batch holds one prompt, otherwise the
        # batch's totals are attached to its first prompt (aggregate metrics stay exact).
        counts = self._drain_stats() if self.speculative else None
        gens = []
        for i, (prompt, ids, (output, start, first, end)) in enumerate(zip(prompts, inputs, results)):
            out_ids = list(output.outputs[0].token_ids)
            gens.append(
                Generation(
                    prompt_id=prompt.id,
                    prompt_tokens=len(ids),
                    output_ids=out_ids,
                    wall_s=end - start,
                    ttft_s=(first - start) if first else None,
                    acceptance=counts if i == 0 else None,
                    text=output.outputs[0].text,
                )
            )
        return gens

    def _drain_stats(self) -> Optional[AcceptanceCounts]:
        if self.native["runtime"] != "pytorch":
            return None  # the TensorRT-engine runtime gets no enable_iter_perf_stats: acceptance is not reported
        return spec_stats(list(self.llm.get_stats(timeout=2)))

    def environment(self) -> Dict[str, Any]:
        import tensorrt_llm
        import torch

        return {
            "engine": "tensorrt_llm",
            "tensorrt_llm": tensorrt_llm.__version__,
            "runtime": self.native["runtime"],
            "api": self.native["api"],
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "machine": platform.machine(),
        }

    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
        self.llm = None
