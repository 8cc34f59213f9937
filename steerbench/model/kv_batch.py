"""The running rows of continuous batching and their shared KV cache (see
``steerbench.model.generation``): new prompts are prefilled in a fresh cache after the
prefix every prompt shares, then joined to the running rows, left-padded to a common length
with the attention mask hiding the padding; rows whose answers ended are dropped with the
cache columns only they needed."""

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
        from transformers.cache_utils import DynamicCache

        device = self.device
        start = prefix.length if prefix else 0
        suffixes = [row.prompt[start:] for row in rows]
        width = max(map(len, suffixes))
        ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in suffixes], device=device)
        mask = torch.tensor(
            [[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device
        )
        positions = (start + mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        if prefix:
            cache = copy.deepcopy(prefix.cache)
            cache.batch_repeat_interleave(len(rows))
            mask = torch.cat([mask.new_ones(len(rows), prefix.length), mask], dim=1)
        else:
            cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        self._join(rows, cache, mask, positions[:, -1] + 1)
        return logits

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
        one-token decoding step."""
        from transformers.cache_utils import DynamicCache

        # token-id lists, not paths: commonprefix compares them element by element
        length = min(len(os.path.commonprefix(prompts)), min(map(len, prompts)) - 2)  # noqa: RUF071
        if len(prompts) < 2 or length < 2:
            return None
        cache = DynamicCache(config=model.config)
        model(
            input_ids=torch.tensor([prompts[0][:length]], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return cls(length, cache)


def left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
