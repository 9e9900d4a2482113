"""tests/fakes.py holds the suite's one fake engine, one fake meter and one tiny-model factory."""

from __future__ import annotations

from pathlib import Path


def tiny_qwen2(
    out: Path,
    tokenizer_dir: Path,
    *,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Path:
    """A 2-layer random float32 Qwen2 with the real tokenizer from `tokenizer_dir`, saved in `out`: a real model for
    every code path in seconds (it says nothing about speed or quality). The defaults give head_dim 16; `seed` picks
    the random weights, so two seeds with untied embeddings give a draft that (nearly) never agrees with the target."""
    # Imported here: the fast tests that import this module for its fakes should not pay for torch and transformers.
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).to(torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
