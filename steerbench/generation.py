"""Batched generation: left padding, length-sorted batches, KV cache, inference mode.

In float32, greedy batched output equals one-prompt-at-a-time output token for token
(pinned by a test), so there batching is purely a speed-up. In bf16 it is not: padding
changes the shapes of the matmuls, and their rounding can flip a near-tie between two
tokens, so a few greedy answers depend on the batch size; a run records its batch size
with every cell (it is part of the cell key).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from steerbench.errors import SteerbenchError
from steerbench.prompts import PromptFormat, encoded_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; greedy unless ``do_sample`` (then seeded for reproducibility)."""

    max_new_tokens: int = 64
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SteerbenchError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise SteerbenchError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise SteerbenchError(
                f"temperature must be a finite number > 0, got {self.temperature}"
            )
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise SteerbenchError(f"top_p must be in (0, 1], got {self.top_p}")


def generate(
    model,
    tokenizer,
    prompts: list[str],
    settings: GenerationSettings | None = None,
    fmt: PromptFormat | None = None,
    *,
    progress: bool = True,
) -> list[str]:
    """Complete every prompt; returns only the newly generated text, in input order."""
    settings = settings or GenerationSettings()
    fmt = fmt or PromptFormat()
    if not prompts:
        return []
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    sampling = (
        {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
        if settings.do_sample
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    responses: list[str] = [""] * len(prompts)
    bar = tqdm(
        total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False
    )
    from transformers import LogitsProcessorList

    from steerbench.levels import active_logits_processors

    with torch.inference_mode():
        for batch, encoded in encoded_batches(tokenizer, prompts, fmt, settings.batch_size, device):
            output = model.generate(
                **encoded,
                logits_processor=LogitsProcessorList(active_logits_processors()),
                max_new_tokens=settings.max_new_tokens,
                pad_token_id=pad_id,
                use_cache=True,
                **sampling,
            )
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for index, text in zip(
                batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            ):
                responses[index] = text.strip()
            bar.update(len(batch))
    bar.close()
    return responses
