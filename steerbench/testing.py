"""Tiny randomly initialised models and a small tokenizer, built in-process (no download).

Used by steerbench's tests and by plugin authors' tests (``from steerbench.testing import
tiny_model``): every code path runs in seconds with no model download.
The tokenizer is a byte-level BPE trained on a few sentences, with a ChatML chat template,
so chat formatting, padding and decoding all behave like a real instruct model's.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "How do I bake bread at home? Mix flour, water, salt and yeast, then knead the dough.",
    "I'm sorry, but I can't assist with that request. It is not appropriate.",
    "Write a poem about the sea and the sky, the wind and the rain.",
    "Explain how a transformer language model predicts the next token.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Sure, here is a step by step guide: first, second, third, finally done.",
    "What is the capital of France? Paris is the capital of France.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols ! ? . , ; : ' \" ( ) - + = /",
]
ARCHITECTURES = ("llama", "qwen2", "gemma3_text")


def tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_config(arch: str, vocab_size: int, *, n_layers: int = 4, tied: bool = False):
    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        tie_word_embeddings=tied,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "gemma3_text":
        return Gemma3TextConfig(**common, head_dim=16, sliding_window=32, query_pre_attn_scalar=16)
    raise ValueError(f"unknown tiny architecture {arch!r}")


def tiny_model(arch: str = "qwen2", *, seed: int = 0, n_layers: int = 4, tied: bool = False):
    """A (model, tokenizer) pair in float32 eval mode, deterministic for a given seed.

    ``tied=True`` shares the embedding and unembedding matrix, as most small published
    models do (Llama-3.2-1B, Qwen2.5-0.5B, Gemma): methods that edit weights must not
    edit the readout through it.
    """
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(arch, len(tokenizer), n_layers=n_layers, tied=tied)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # non-uniform norm gains, so tests notice a norm in the way
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.3 * torch.randn_like(param))
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def save_tiny_model(directory: Path, arch: str = "qwen2", *, seed: int = 0) -> Path:
    """Write a tiny model and tokenizer with save_pretrained (to test directory loading)."""
    model, tokenizer = tiny_model(arch, seed=seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
