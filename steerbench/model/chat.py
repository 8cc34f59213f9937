"""Prompt formatting and tokenisation.

Instruct models see the user turn through their own chat template (with the generation
prompt), base models see raw text. Everything that tokenises prompts goes through
``tokenize_batch`` so that generation, capture and metrics agree on the exact tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from steerbench.errors import SteerbenchError


@dataclass(frozen=True)
class PromptFormat:
    """How a prompt becomes model input: ``chat`` None means "use the template if any"."""

    chat: bool | None = None
    system_prompt: str | None = None

    def uses_chat(self, tokenizer) -> bool:
        has_template = getattr(tokenizer, "chat_template", None) is not None
        if self.chat is None:
            return has_template
        if self.chat and not has_template:
            raise SteerbenchError(
                "chat formatting was requested but the tokenizer has no chat template; "
                "use raw prompts (chat: false / --no-chat) for base models"
            )
        return self.chat


REPLY = "\x1e"
"""Separates a prompt from the start of the model's reply in one prompt string (ASCII record
separator, which no prompt set contains): ``with_reply(question, "(A")`` is the question
with the assistant turn pre-filled, as CAA fits behaviour vectors at the answer letter."""


def with_reply(prompt: str, reply: str) -> str:
    """``prompt`` with the model's reply pre-filled with ``reply`` (see ``REPLY``)."""
    return f"{prompt}{REPLY}{reply}"


def split_reply(prompt: str) -> tuple[str, str]:
    """(the user turn, the pre-filled start of the reply: "" when there is none)."""
    user, _, reply = prompt.partition(REPLY)
    return user, reply


def format_prompts(tokenizer, prompts: list[str], fmt: PromptFormat | None = None) -> list[str]:
    """Render prompts as the model sees them (chat template or raw text), with the
    instructions of an active input-level steering method (``steerbench.model.levels``) first
    and a pre-filled reply (``with_reply``) after the generation prompt, so every reader
    (capture, generation, the A/B metric) sees the same tokens."""
    from steerbench.model.levels import active_instructions

    fmt = fmt or PromptFormat()
    system = "\n\n".join(
        [*active_instructions(), *([fmt.system_prompt] if fmt.system_prompt else [])]
    )
    rendered = []
    for prompt, reply in map(split_reply, prompts):
        if not fmt.uses_chat(tokenizer):
            rendered.append((f"{system}\n\n{prompt}" if system else prompt) + reply)
            continue
        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        rendered.append(text + reply)
    return rendered


def tokenize_batch(
    tokenizer, texts: list[str], *, chat: bool, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Left-padded batch. Chat-rendered text already holds its special tokens (BOS etc.)."""
    tokenizer.padding_side = "left"
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    return {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, to minimise padding."""
    if batch_size < 1:
        raise SteerbenchError(f"batch size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def prompt_token_ids(tokenizer, texts: list[str], *, chat: bool) -> list[list[int]]:
    """Each rendered prompt's token ids, unpadded, by the same rule as ``tokenize_batch``."""
    return tokenizer(texts, add_special_tokens=not chat)["input_ids"]


def token_lengths(tokenizer, texts: list[str], *, chat: bool) -> list[int]:
    return [len(ids) for ids in prompt_token_ids(tokenizer, texts, chat=chat)]


def encoded_batches(
    tokenizer, prompts: list[str], fmt: PromptFormat, batch_size: int, device
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Render, length-sort, batch and tokenise prompts: yields (indices into ``prompts``,
    left-padded batch on ``device``). Generation, capture and metrics all feed the model
    through this one pipeline, so they agree on the exact tokens."""
    chat = fmt.uses_chat(tokenizer)
    texts = format_prompts(tokenizer, prompts, fmt)
    for batch in length_sorted_batches(token_lengths(tokenizer, texts, chat=chat), batch_size):
        yield batch, tokenize_batch(tokenizer, [texts[i] for i in batch], chat=chat, device=device)


def n_batches(n_prompts: int, batch_size: int) -> int:
    return math.ceil(n_prompts / batch_size)
