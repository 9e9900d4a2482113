"""Trust in the counts: the PyTorch backend's per-step (drafted, accepted) against an independent re-derivation.

The reference below uses none of specsweep's code: plain fp32 forwards of the models (no KV cache), a greedy
draft-and-verify loop and a prompt-lookup proposer written from the algorithms' definitions, with transformers'
documented draft-length rule (min(k, tokens left - 1)) and its crop at EOS and the length budget. "Accepted" is
defined once for every backend: a drafted token equal to the token the target appended at that position.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build_engine
from specsweep.config.compose import compose_config
from specsweep.datasets import load_prompts

pytestmark = pytest.mark.slow

MAX_NEW = 24
PROMPTS = [
    {"id": "one-word", "category": "qa", "prompt": "Answer with one word: what colour is a clear daytime sky?"},
    {
        "id": "chat-2",
        "category": "chat",
        "prompt": "Suggest a name and a one-line tagline for a small bakery that specializes in sourdough.",
    },
    {
        "id": "edit",
        "category": "editing",
        "prompt": "Repeat this sentence exactly, then add one word at the end: "
        "the quick brown fox jumps over the lazy dog and the quick brown fox sleeps.",
    },
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, packaged_tokenizer_dir):
    """Target: the packaged 0.5B in fp32. Draft: the same model with its last transformer layer removed (an early-exit
    draft: related enough to be accepted often, different enough to be rejected sometimes)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    target = AutoModelForCausalLM.from_pretrained(packaged_tokenizer_dir, dtype=torch.float32).eval()
    draft = AutoModelForCausalLM.from_pretrained(packaged_tokenizer_dir, dtype=torch.float32).eval()
    keep = draft.config.num_hidden_layers - 1
    draft.model.layers = draft.model.layers[:keep]
    draft.config.num_hidden_layers = keep
    if getattr(draft.config, "layer_types", None):
        draft.config.layer_types = draft.config.layer_types[:keep]
    draft_dir = tmp_path_factory.mktemp("early-exit-draft")
    draft.save_pretrained(draft_dir)
    tokenizer = AutoTokenizer.from_pretrained(packaged_tokenizer_dir)
    tokenizer.save_pretrained(draft_dir)
    return {
        "target": target,
        "draft": draft,
        "tokenizer": tokenizer,
        "target_dir": packaged_tokenizer_dir,
        "draft_dir": draft_dir,
    }


_FORWARDS: dict = {}  # (model, ids) -> argmaxes: every k follows the same greedy trajectory, so contexts repeat


def _greedy(model, ids: list[int]) -> list[int]:
    """argmax of the next token after every position of `ids` (one full forward, no cache)."""
    key = (id(model), tuple(ids))
    if key not in _FORWARDS:
        with torch.inference_mode():
            _FORWARDS[key] = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
    return _FORWARDS[key]


def _draft_tokens(draft, ids: list[int], n: int, eos: int) -> list[int]:
    out: list[int] = []
    for _ in range(n):
        out.append(_greedy(draft, ids + out)[-1])
        if out[-1] == eos:
            break
    return out


def _lookup_tokens(ids: list[int], n: int, window: int, eos: int) -> list[int]:
    """Prompt lookup: for window sizes window..1, the first earlier match of the last n-gram; the n tokens after it."""
    for size in range(min(window, len(ids) - 1), 0, -1):
        tail = ids[-size:]
        for start in range(len(ids) - size + 1):
            if ids[start : start + size] == tail and start + size < len(ids):
                found = ids[start + size : min(start + size + n, len(ids))]
                return found[: found.index(eos)] if eos in found else found
    return []


def reference_run(target, propose, prompt_ids: list[int], k: int, eos: int):
    """Greedy speculative decoding from its definition: (output ids, [(drafted, accepted) per draft step])."""
    out: list[int] = []
    steps = []
    while len(out) < MAX_NEW and (not out or out[-1] != eos):
        drafted = propose(prompt_ids + out, min(k, MAX_NEW - len(out) - 1))
        chosen = _greedy(target, prompt_ids + out + drafted)[len(prompt_ids) + len(out) - 1 :]
        keep = 0
        while keep < len(drafted) and drafted[keep] == chosen[keep]:
            keep += 1
        appended = chosen[: keep + 1][: MAX_NEW - len(out)]
        if eos in appended:
            appended = appended[: appended.index(eos) + 1]
        if drafted:
            accepted = 0
            while accepted < min(len(drafted), len(appended)) and drafted[accepted] == appended[accepted]:
                accepted += 1
            steps.append((len(drafted), accepted))
        out += appended
    return out, steps


@pytest.fixture(scope="module")
def session():
    """One session for the module, as in a sweep: the backend loads each model once."""
    from specsweep.session import Session

    kept = Session()
    yield kept
    kept.close()


def backend_run(models, session, method: str, k: int, dataset_path, extra=()):
    cfg = compose_config(
        [
            "backend=pytorch",
            f"speculation={method}",
            f"speculation.num_speculative_tokens={k}",
            f"model.target={models['target_dir']}",
            f"model.draft={models['draft_dir']}",
            "model.name=ref",
            "backend.dtype=float32",
            "backend.num_threads=2",
            f"generation.max_new_tokens={MAX_NEW}",
            "dataset=jsonl",
            f"dataset.path={dataset_path}",
            *extra,
        ]
    )
    engine = build_engine(cfg, session)
    try:
        return {g.prompt_id: g for g in engine.generate(load_prompts(cfg.dataset))}
    finally:
        engine.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref-prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def _prompt_ids(tokenizer, text: str) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def _check(models, session, method: str, k: int, propose, dataset, extra=()):
    tokenizer, eos = models["tokenizer"], models["tokenizer"].convert_tokens_to_ids("<|im_end|>")
    got = backend_run(models, session, method, k, dataset, extra)
    partial = False
    for p in PROMPTS:
        ref_out, ref_steps = reference_run(
            models["target"], lambda ids, n: propose(ids, n, eos), _prompt_ids(tokenizer, p["prompt"]), k, eos
        )
        gen = got[p["id"]]
        assert gen.output_ids == ref_out, p["id"]
        assert gen.acceptance.steps == ref_steps, (p["id"], gen.acceptance.steps, ref_steps)
        assert gen.acceptance.accepted == sum(a for _, a in ref_steps)
        assert gen.acceptance.drafted == sum(d for d, _ in ref_steps)
        partial |= 0 < gen.acceptance.accepted < gen.acceptance.drafted
    assert partial, "no prompt had partial acceptance: the comparison would not exercise rejections"
    return got


@pytest.mark.parametrize("k", [1, 3, 5])
def test_draft_model_counts_match_the_reference_step_by_step(models, session, dataset, k):
    draft = models["draft"]
    got = _check(models, session, "draft_model", k, lambda ids, n, eos: _draft_tokens(draft, ids, n, eos), dataset)
    # output tokens = accepted drafts + one target token per verification step, allowing for the last step: cut at
    # an accepted EOS or the budget (no target token after it: -1), or one last step with no room to draft (+1)
    for gen in got.values():
        steps = len(gen.acceptance.steps)
        assert gen.acceptance.accepted + steps - 1 <= len(gen.output_ids) <= gen.acceptance.accepted + steps + 1


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prompt_lookup_counts_match_the_reference_step_by_step(models, session, dataset, k):
    _check(
        models,
        session,
        "ngram",
        k,
        lambda ids, n, eos: _lookup_tokens(ids, n, 2, eos),
        dataset,
        extra=("speculation.ngram_max=2",),
    )


def test_a_correctly_drafted_eos_counts_as_accepted(models, session, dataset):
    """The case transformers' own n_matches gets wrong: the draft proposes the target's EOS."""
    got = backend_run(models, session, "draft_model", 3, dataset)
    eos = models["tokenizer"].convert_tokens_to_ids("<|im_end|>")
    gen = got["one-word"]
    assert gen.output_ids[-1] == eos
    _, ref_steps = reference_run(
        models["target"],
        lambda ids, n: _draft_tokens(models["draft"], ids, n, eos),
        _prompt_ids(models["tokenizer"], PROMPTS[0]["prompt"]),
        3,
        eos,
    )
    assert ref_steps[-1][1] >= 1  # the final step accepted the drafted EOS
    assert gen.acceptance.steps == ref_steps
