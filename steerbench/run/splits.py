"""The seeded discovery / validation / evaluation split every prompt set and behaviour
item set shares: discovery fits the methods, validation chooses their strengths,
evaluation reports, and no item is in two of them."""

from __future__ import annotations

import random
import typing
from collections import defaultdict
from typing import Literal

from steerbench.run.prompt_files import PromptRecord

Split = Literal["discovery", "validation", "evaluation"]
SPLITS: tuple[Split, ...] = typing.get_args(Split)
SPLIT_FRACTIONS = (0.4, 0.2, 0.4)
"""Discovery fits the methods, validation chooses their strengths, evaluation reports."""
DEFAULT_SPLIT_SEED = 0


def stratified_split(
    records: list[PromptRecord], *, seed: int = DEFAULT_SPLIT_SEED
) -> dict[str, list[PromptRecord]]:
    """Seeded, category-stratified discovery / validation / evaluation split (40/20/40 %
    of each category, disjoint by construction).

    Sets with the same category sequence (JBB harmful and benign) get the same indices,
    so topic-matched pairs stay on the same side.
    """
    by_category: dict[str | None, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_category[record.category].append(index)
    rng = random.Random(seed)
    side: dict[int, str] = {}
    for category in sorted(by_category, key=str):
        indices = by_category[category][:]
        rng.shuffle(indices)
        n_discovery = round(len(indices) * SPLIT_FRACTIONS[0])
        n_validation = round(len(indices) * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])) - n_discovery
        for position, index in enumerate(indices):
            side[index] = (
                "discovery"
                if position < n_discovery
                else "validation"
                if position < n_discovery + n_validation
                else "evaluation"
            )
    return {split: [r for i, r in enumerate(records) if side[i] == split] for split in SPLITS}


def take_stratified(records: list[PromptRecord], n: int, *, seed: int = 0) -> list[PromptRecord]:
    """``n`` records spread over categories (seeded round-robin), in their original order."""
    if n >= len(records):
        return records
    by_category: dict[str | None, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_category[record.category].append(index)
    rng = random.Random(seed)
    pools = []
    for category in sorted(by_category, key=str):
        indices = by_category[category][:]
        rng.shuffle(indices)
        pools.append(indices)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        chosen += [pool[depth] for pool in pools if depth < len(pool)][: n - len(chosen)]
        depth += 1
    return [records[i] for i in sorted(chosen)]


def split_ids(ids: list[str], split: str, *, seed: int, n: int | None = None) -> list[str]:
    """The ids of one split of uncategorised items (the rule ``stratified_split`` applies to
    a prompt set of that size), ``n`` of them by ``take_stratified``'s seeded draw: so items
    that are not prompts (A/B questions, TruthfulQA's) split exactly as their prompt sets do."""
    part = stratified_split([PromptRecord(id=i, text="") for i in ids], seed=seed)[split]
    if n is not None:
        part = take_stratified(part, n, seed=seed)
    return [record.id for record in part]
