"""Batched generation with continuous batching: a row whose answer has ended (a refusal
ends after a dozen tokens) is dropped from the batch at once and free places are refilled
with the next waiting prompts, so finished answers stop costing compute and the batch stays
(nearly) full.

New prompts are prefilled in a fresh KV cache (so a prompt pass is a prompt pass, also for
methods that steer only generated tokens), then joined to the running batch's cache: both
are left-padded to a common length and the attention mask hides the padding. Each row
keeps its own position ids and its own fresh logits processors, which see that row's own
tokens, exactly as if it were generated alone.

In float32, greedy output equals one-prompt-at-a-time output token for token (pinned by a
test), so there batching is purely a speed-up. In bf16 it is not: padding and batch
composition change the shapes of the matmuls, and their rounding can flip a near-tie
between two tokens, so a few greedy answers depend on which prompts shared the batch. The
schedule is deterministic for a given prompt list and settings, and a run records its
generation settings (batch size and schedule) with every cell (they are in the cell key).
``schedule="static"`` runs fixed, length-sorted batches through ``model.generate``
instead (the baseline ``steerbench bench`` compares against; also used for models whose
KV cache is not a plain per-layer key/value cache, such as sliding-window layers).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from steerbench.errors import SteerbenchError
from steerbench.model.chat import PromptFormat, encoded_batches, format_prompts, prompt_token_ids
from steerbench.model.kv_batch import Row, RunningBatch, SharedPrefix

log = logging.getLogger(__name__)

SCHEDULES = ("continuous", "static")


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; greedy unless ``do_sample`` (then seeded for reproducibility).
    ``batch_size`` is the number of rows decoded together. ``refill_rows`` (continuous
    batching): waiting prompts join once this many rows are free, or when all of them fit;
    a prompt pass reads every weight however few prompts it carries, so refilling one row
    at a time costs a full pass per prompt. Default: an eighth of the batch, resolved here
    so that it is recorded with the settings."""

    max_new_tokens: int = 64
    batch_size: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    schedule: str = "continuous"
    refill_rows: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SteerbenchError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise SteerbenchError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.refill_rows is None:
            object.__setattr__(self, "refill_rows", max(1, self.batch_size // 8))
        refill = self.refill_rows
        assert refill is not None  # set just above
        if not 1 <= refill <= self.batch_size:
            raise SteerbenchError(
                f"refill_rows must be between 1 and batch_size ({self.batch_size}), "
                f"got {self.refill_rows}"
            )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise SteerbenchError(
                f"temperature must be a finite number > 0, got {self.temperature}"
            )
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise SteerbenchError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.schedule not in SCHEDULES:
            raise SteerbenchError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )


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
    answers = generate_tokens(model, tokenizer, prompts, settings, fmt, progress=progress)
    return [text.strip() for text in tokenizer.batch_decode(answers, skip_special_tokens=True)]


def generate_tokens(
    model,
    tokenizer,
    prompts: list[str],
    settings: GenerationSettings | None = None,
    fmt: PromptFormat | None = None,
    *,
    progress: bool = True,
) -> list[list[int]]:
    """Every prompt's answer token ids, up to and including the end-of-answer token when
    one came, in input order."""
    settings = settings or GenerationSettings()
    fmt = fmt or PromptFormat()
    if not prompts:
        return []
    check_context(model, tokenizer, prompts, settings, fmt)
    bar = tqdm(
        total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False
    )
    with torch.inference_mode():
        if settings.schedule == "continuous" and _plain_kv_cache(model):
            answers = _generate_continuous(model, tokenizer, prompts, settings, fmt, bar)
        else:
            answers = _generate_static(model, tokenizer, prompts, settings, fmt, bar)
    bar.close()
    return answers


def check_context(model, tokenizer, prompts: list[str], settings, fmt: PromptFormat) -> None:
    """Refuse, with one line naming the prompt, a prompt whose rendered tokens plus the
    answer budget exceed the model's context (``max_position_embeddings``): past it the
    model reads positions it was never trained on and answers garbage without an error."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return
    texts = format_prompts(tokenizer, prompts, fmt)
    ids = prompt_token_ids(tokenizer, texts, chat=fmt.uses_chat(tokenizer))
    for index, length in enumerate(len(row) for row in ids):
        if length + settings.max_new_tokens > limit:
            raise SteerbenchError(
                f"prompt {index + 1} is {length} tokens; with max_new_tokens "
                f"{settings.max_new_tokens} that exceeds the model's context of {limit} "
                f"tokens; shorten the prompt or lower max_new_tokens"
            )


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _plain_kv_cache(model) -> bool:
    """Whether the model's cache is one plain key/value tensor pair per layer, which rows
    can be dropped from and joined to (not sliding-window or recurrent layers)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _generate_static(model, tokenizer, prompts, settings, fmt, bar) -> list[list[int]]:
    """Fixed length-sorted batches through ``model.generate``: a batch runs until its
    longest answer ends."""
    from transformers import LogitsProcessorList

    from steerbench.model.levels import active_logits_processors

    device = next(model.parameters()).device
    sampling = (
        {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
        if settings.do_sample
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    if settings.do_sample:
        torch.manual_seed(settings.seed)
    eos = _eos_ids(model, tokenizer)
    tokens: list[list[int]] = [[] for _ in prompts]
    for batch, encoded in encoded_batches(tokenizer, prompts, fmt, settings.batch_size, device):
        output = model.generate(
            **encoded,
            logits_processor=LogitsProcessorList(active_logits_processors()),
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=_pad_id(tokenizer),
            use_cache=True,
            **sampling,
        )
        for index, row in zip(batch, output[:, encoded["input_ids"].shape[1] :].tolist()):
            ends = [i for i, token in enumerate(row) if token in eos]
            tokens[index] = row[: ends[0] + 1] if ends else row  # not the padding after it
        bar.update(len(batch))
    return tokens


def _eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def _generate_continuous(model, tokenizer, prompts, settings, fmt, bar) -> list[list[int]]:
    """Decode ``settings.batch_size`` rows at a time; finished rows are replaced by the
    next waiting prompts, ``settings.refill_rows`` or more at once (longest prompts first,
    so joined prompts need little padding)."""
    from transformers.generation.logits_process import (
        LogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    from steerbench.model.levels import active_logits_processors

    device = next(model.parameters()).device
    chat = fmt.uses_chat(tokenizer)
    texts = format_prompts(tokenizer, prompts, fmt)
    ids = prompt_token_ids(tokenizer, texts, chat=chat)
    waiting = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))[::-1]  # pop() longest
    prefix = SharedPrefix.shared_by(model, ids, device)
    eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=device)
    warpers: list[LogitsProcessor] = []
    if settings.do_sample:
        warpers = [TemperatureLogitsWarper(settings.temperature)]
        if settings.top_p < 1:
            warpers.append(TopPLogitsWarper(settings.top_p))
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    processing = bool(active_logits_processors())
    tokens: list[list[int]] = [[] for _ in prompts]
    batch = RunningBatch(model, device)
    logits = None
    while waiting or batch.rows:
        free = settings.batch_size - len(batch.rows)
        if waiting and free >= min(settings.refill_rows, len(waiting)):
            new = [waiting.pop() for _ in range(min(free, len(waiting)))]
            rows = [Row(i, ids[i], active_logits_processors() if processing else []) for i in new]
            new_logits = batch.prefill(rows, prefix, _pad_id(tokenizer))
            logits = new_logits if logits is None else torch.cat([logits, new_logits])
        assert logits is not None  # the first pass always prefills
        scores = logits.float()
        if processing:
            scores = torch.cat(
                [_process(row, scores[i : i + 1], device) for i, row in enumerate(batch.rows)]
            )
        if settings.do_sample:
            for warper in warpers:
                scores = warper(None, scores)
            probs = torch.softmax(scores, dim=-1)
            chosen = torch.multinomial(probs, 1, generator=generator)[:, 0]
        else:
            chosen = scores.argmax(dim=-1)
        ended = torch.isin(chosen, eos).tolist()
        keep = []
        for i, (row, token) in enumerate(zip(batch.rows, chosen.tolist())):
            row.answer.append(token)
            if ended[i] or len(row.answer) >= settings.max_new_tokens:
                tokens[row.index] = row.answer
                bar.update(1)
            else:
                keep.append(i)
        if len(keep) < len(batch.rows):
            batch.keep(keep)
            chosen = chosen[keep]
        logits = batch.step(chosen) if batch.rows else None
    return tokens


def _process(row: Row, scores: torch.Tensor, device) -> torch.Tensor:
    """The row's own processors on its own ids so far, as if it were generated alone."""
    ids = torch.tensor([row.prompt + row.answer], device=device)
    for processor in row.processors:
        scores = processor(ids, scores)
    return scores
