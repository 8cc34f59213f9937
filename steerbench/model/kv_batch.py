"""The running rows of continuous batching and their shared KV cache (see
``steerbench.model.generation``): new prompts are prefilled in a fresh cache after the
prefix every prompt shares, then joined to the running rows, left-padded to a common length
with the attention mask hiding the padding; rows whose answers ended are dropped with the
cache columns only they needed. ``prefill_after`` is that prefill pass alone, which
``steerbench.model.prefix`` also runs to read many sequences after their shared prefix."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Row:
    """One prompt being answered: its prompt ids, answer so far and own processors."""

    index: int
    prompt: list[int]
    processors: list = field(default_factory=list)
    answer: list[int] = field(default_factory=list)


class RunningBatch:
    """The running rows and their shared KV cache (padding, hidden by the attention mask,
    where rows of different lengths meet)."""

    def __init__(self, model, device: torch.device) -> None:
        self.model, self.device = model, device
        self.rows: list[Row] = []
        # None until the first prefill and after the last row leaves; only read in between.
        self.cache: Any = None  # a transformers Cache
        self.mask: Any = None  # [rows, cache length] tensor, 1 = real token
        self.positions: Any = None  # [rows] tensor: position of each next token

    def prefill(self, rows: list[Row], prefix: SharedPrefix | None, pad_id: int) -> torch.Tensor:
        """Run the new prompts (after the shared prefix, whose cache is reused) in a fresh
        cache, join them to the batch; returns their next-token logits."""
        start = prefix.length if prefix else 0
        filled = prefill_after(
            self.model, [row.prompt[start:] for row in rows], prefix, pad_id, self.device
        )
        self._join(rows, filled.cache, filled.mask, filled.positions[:, -1] + 1)
        return filled.logits

    def _join(self, rows, cache, mask, positions) -> None:
        if self.cache is None:
            self.rows, self.cache, self.mask, self.positions = list(rows), cache, mask, positions
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([left_pad(mine.keys, width), left_pad(theirs.keys, width)])
            mine.values = torch.cat([left_pad(mine.values, width), left_pad(theirs.values, width)])
        self.mask = torch.cat([left_pad(self.mask, width, dim=1), left_pad(mask, width, dim=1)])
        self.positions = torch.cat([self.positions, positions])
        self.rows.extend(rows)

    def step(self, next_tokens: torch.Tensor) -> torch.Tensor:
        """Feed each row its latest token; returns the next-token logits."""
        ones = torch.ones_like(self.mask[:, :1])
        self.mask = torch.cat([self.mask, ones], dim=1)
        logits = self.model(
            input_ids=next_tokens[:, None],
            attention_mask=self.mask,
            position_ids=self.positions[:, None],
            cache=self.cache,
            use_cache=True,
        ).logits[:, -1]
        self.positions = self.positions + 1
        return logits

    def keep(self, keep: list[int]) -> None:
        """Drop every row not in ``keep``, and the cache columns only they needed."""
        if not keep:
            self.rows, self.cache, self.mask, self.positions = [], None, None, None
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        start = int((mask.sum(0) > 0).nonzero()[0])  # leading columns that are all padding
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self.mask, self.positions = mask[:, start:], self.positions[index]
        self.rows = [self.rows[i] for i in keep]


@dataclass
class SharedPrefix:
    """The tokens every prompt of a call starts with (the chat template's system turn),
    run once: each prompt's own pass starts after it."""

    length: int
    cache: Any  # a transformers Cache, copied for each new batch of rows

    @classmethod
    def shared_by(
        cls, model, prompts: list[list[int]], device: torch.device
    ) -> SharedPrefix | None:
        """None for a single prompt or a prefix too short to be worth a pass; always leaves
        each prompt at least two tokens of its own, so its own pass is never taken for a
        one-token decoding step. None too for a cache that is not one plain key/value pair
        per layer: a sliding-window layer drops the prefix's early tokens, and the padding
        after the prefix then hides the wrong columns."""
        # token-id lists, not paths: commonprefix compares them element by element
        length = min(len(os.path.commonprefix(prompts)), min(map(len, prompts)) - 2)  # noqa: RUF071
        if len(prompts) < 2 or length < 2 or not plain_kv_cache(model):
            return None
        return cls.of(model, prompts[0][:length], device)

    @classmethod
    def of(cls, model, tokens: list[int], device: torch.device) -> SharedPrefix:
        """The cache of ``tokens`` run once (a prefix the caller knows every prompt has)."""
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=model.config)
        model(
            input_ids=torch.tensor([tokens], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return cls(len(tokens), cache)


@dataclass
class Prefilled:
    """A prefill pass's result: the rows' next-token logits, and the cache, attention mask
    (prefix columns included) and position ids to keep decoding them from."""

    logits: torch.Tensor  # [rows, vocab]
    cache: Any  # a transformers Cache; None when the pass kept none
    mask: torch.Tensor  # [rows, prefix + suffix width], 1 = real token
    positions: torch.Tensor  # [rows, suffix width]: each suffix token's position
    hidden: tuple[torch.Tensor, ...] | None = None  # per layer [rows, suffix width, d], if asked


def prefill_after(
    model,
    suffixes: list[list[int]],
    prefix: SharedPrefix | None,
    pad_id: int,
    device: torch.device,
    *,
    keep_cache: bool = True,
    keep_logits: int = 1,
    hidden_states: bool = False,
) -> Prefilled:
    """One pass over ``suffixes``, left-padded to a common width, each after a copy of the
    shared prefix's cache (or from position 0 without one): continuous batching's prefill
    and the prefix-sharing forward (``steerbench.model.prefix``) run exactly this, so both
    see the same positions and mask. ``keep_cache=False`` keeps no cache when there is no
    prefix (a read that decodes nothing after it); ``keep_logits`` > 1 keeps the logits of
    each row's last positions, ``[rows, keep_logits, vocab]`` (a continuation's scores);
    ``hidden_states`` keeps every layer's residual stream over the suffix (a judge's features)."""
    from transformers.cache_utils import DynamicCache

    start = prefix.length if prefix else 0
    width = max(map(len, suffixes))
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in suffixes], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
    positions = (start + mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    if prefix:
        cache = copy.deepcopy(prefix.cache)
        cache.batch_repeat_interleave(len(suffixes))
        mask = torch.cat([mask.new_ones(len(suffixes), prefix.length), mask], dim=1)
    else:
        cache = DynamicCache(config=model.config) if keep_cache else None
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        cache=cache,
        use_cache=cache is not None,
        logits_to_keep=keep_logits,
        output_hidden_states=hidden_states,
    )
    logits = out.logits[:, -1] if keep_logits == 1 else out.logits
    return Prefilled(logits, cache, mask, positions, out.hidden_states if hidden_states else None)


def plain_kv_cache(model) -> bool:
    """Whether the model's cache is one plain key/value tensor pair per layer, which rows
    can be dropped from and joined to, and a shared prefix's copy padded after (not
    sliding-window or recurrent layers)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
