"""One vLLM engine in its own process, driven over a pipe by `backend.VllmBackend`.

Engines never share a process: in-process vLLM breaks any LLM() built after an ngram LLM() in the same process,
and a process per engine also keeps one config's memory and state out of the next. The parent sets the
environment (VLLM_ENABLE_V1_MULTIPROCESSING=0, cache dirs) before this module imports vllm.

Requests are (command, payload) tuples; replies are ("ok", value) or ("error", one-line summary, traceback):
  load         {llm_kwargs, speculative_config}           -> engine facts (versions, import and build time)
  generate     {prompts, sampling_params, chat_template}  -> {"generations": [Generation], "wall_s": float}
  peak_memory  None                                       -> peak RSS of this process in MB
  close        None                                       -> None, then the process exits
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Dict, List, Optional

from specsweep.backends.base import encode_prompt, time_in_rounds
from specsweep.backends.vllm.counters import counters_from_metrics, counts_from_request
from specsweep.core import AcceptanceCounts, Generation, Prompt


class Engine:
    def __init__(self, llm_kwargs: Dict[str, Any], speculative_config: Optional[Dict[str, Any]]):
        start = time.perf_counter()
        import torch
        import vllm
        from vllm.platforms import current_platform

        self.import_s = time.perf_counter() - start
        start = time.perf_counter()
        kwargs = dict(llm_kwargs)
        if speculative_config is not None:
            kwargs["speculative_config"] = speculative_config
        self.llm = vllm.LLM(**kwargs)
        self.build_s = time.perf_counter() - start
        self.tokenizer = self.llm.get_tokenizer()
        self.speculative = speculative_config is not None
        self.facts = {
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "device": current_platform.device_type,
            "torch_threads": torch.get_num_threads(),
            "engine_import_s": self.import_s,
            "engine_build_s": self.build_s,
        }

    def counters(self) -> Optional[AcceptanceCounts]:
        return counters_from_metrics(self.llm.get_metrics()) if self.speculative else None

    def generate(self, prompts: List[Prompt], sampling_params: Dict[str, Any], chat_template: bool) -> Dict[str, Any]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=encode_prompt(self.tokenizer, p.text, chat_template)) for p in prompts]
        params = SamplingParams(**sampling_params)
        before = self.counters()
        start = time.perf_counter()
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        wall_s = time.perf_counter() - start
        window = self.counters() - before if self.speculative else None

        generations, total = [], AcceptanceCounts()
        for prompt, request, output in zip(prompts, inputs, outputs):
            completion = output.outputs[0]
            stats = output.metrics
            acceptance = None
            if self.speculative:
                sd = completion.spec_decode_metrics
                acceptance = (
                    counts_from_request(sd.histogram, sd.num_draft_tokens, sd.num_spec_tokens)
                    if sd
                    else AcceptanceCounts()
                )
                total = total + acceptance
            generations.append(
                Generation(
                    prompt_id=prompt.id,
                    prompt_tokens=len(request["prompt_token_ids"]),
                    output_ids=list(completion.token_ids),
                    # arrival -> first token (wall clock), then first -> last token (engine-core monotonic clock)
                    wall_s=stats.first_token_latency + (stats.last_token_ts - stats.first_token_ts),
                    ttft_s=stats.first_token_latency,
                    acceptance=acceptance,
                    text=completion.text,
                )
            )
        if window is not None and not window.same_totals(total):
            raise RuntimeError(
                f"vLLM per-request acceptance {total} disagrees with its counters for this window {window}"
            )
        return {"generations": generations, "wall_s": wall_s}

    def step_costs(self, prompt: Prompt, n_max: int, repeats: int, chat_template: bool) -> Dict[int, float]:
        """n -> t_verify(n) for n = 1..n_max, raw medians (what `Backend.timed_forwards` returns): the time to first
        token (vLLM's own per-request metric) of a request whose prompt is the first n tokens of this prompt, with
        one output token: one target forward over n new tokens plus the engine's work for one step. Timed in rounds
        over every n; the medians of the rounds after the first (a warm-up). Only for proposers that cost nothing in
        the engine (prompt lookup): a draft model runs its own forwards inside the same request."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = encode_prompt(self.tokenizer, prompt.text, chat_template)
        ids = (ids * (n_max // len(ids) + 1))[:n_max]
        params = SamplingParams(max_tokens=1, temperature=0.0)

        def timer(n: int):
            def ttft() -> float:
                (output,) = self.llm.generate([TokensPrompt(prompt_token_ids=ids[:n])], params, use_tqdm=False)
                return output.metrics.first_token_latency

            return ttft

        return time_in_rounds({n: timer(n) for n in range(1, n_max + 1)}, repeats)


def summary(err: Exception) -> str:
    """One line naming the cause; pydantic puts it on the second line ("1 validation error for X" first)."""
    lines = [" ".join(line.split()) for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {' '.join(lines[:2])}"


def serve(conn: Connection) -> None:
    engine: Optional[Engine] = None
    while True:
        try:
            command, payload = conn.recv()
        except EOFError:  # the parent is gone
            return
        try:
            if command == "load":
                engine = Engine(**payload)
                reply: Any = engine.facts
            elif command == "generate":
                reply = engine.generate(**payload)
            elif command == "step_costs":
                reply = engine.step_costs(**payload)
            elif command == "peak_memory":
                reply = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            elif command == "close":
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown worker command {command!r}")
            conn.send(("ok", reply))
        except Exception as err:  # reported to the parent, which raises it there
            conn.send(("error", summary(err), traceback.format_exc()))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: vLLM's in-process shutdown hooks add seconds and nothing here needs them
