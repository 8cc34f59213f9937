"""One forward pass per sequence, read at its last position, with the prefix every sequence
shares run once: a judge's grading messages all start with the same chat-template system
turn and grading instruction, which would otherwise be recomputed for every message.

The prefix's KV cache is computed once (``SharedPrefix.shared_by``: only for two or more
sequences sharing two or more tokens, each keeping at least two of its own), and each
length-sorted batch runs only its suffixes, left-padded, after a copy of it: the same
prefill continuous batching runs (``steerbench.model.kv_batch.prefill_after``). In float32
the logits equal each sequence's forward pass alone, to rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from steerbench.model.chat import length_sorted_batches
from steerbench.model.kv_batch import SharedPrefix, prefill_after

log = logging.getLogger(__name__)


def last_logits(
    model,
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    device: torch.device | str,
    *,
    columns: Sequence[int] | None = None,
    pad_id: int = 0,
    on_batch: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Each sequence's next-token logits after its last token, float32 on the CPU, in input
    order: ``[len(sequences), vocab]``, or only the vocabulary ``columns`` asked for (a few
    digits out of 150k keep the result small). ``sequences`` are token ids as the model
    reads them (rendered and tokenised, special tokens included); ``pad_id`` only fills
    masked places. ``on_batch`` is told each batch's size once it ran (a progress bar)."""
    device = torch.device(device)
    ids = [list(s) for s in sequences]
    index = torch.tensor(list(columns), device=device) if columns is not None else None
    if not ids:
        width = len(index) if index is not None else model.get_output_embeddings().weight.shape[0]
        return torch.empty(0, width)
    if min(map(len, ids)) < 1:
        raise ValueError("every sequence needs at least one token to be read after")
    with torch.inference_mode():  # a read: no graph, and a cache that can be copied
        prefix = SharedPrefix.shared_by(model, ids, device)
        start = prefix.length if prefix else 0
        if prefix:
            log.debug("shared prefix of %d tokens over %d sequences", start, len(ids))
        batches = length_sorted_batches([len(s) for s in ids], batch_size)
        chunks = []
        for batch in batches:
            filled = prefill_after(
                model, [ids[i][start:] for i in batch], prefix, pad_id, device, keep_cache=False
            )
            logits = filled.logits if index is None else filled.logits[:, index]
            chunks.append(logits.float().cpu())
            if on_batch is not None:
                on_batch(len(batch))
    rows = torch.cat(chunks)
    out = torch.empty_like(rows)
    out[torch.tensor([i for batch in batches for i in batch])] = rows
    return out


@torch.inference_mode()
def continuation_log_likelihoods(
    model,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int,
    device: torch.device | str,
    *,
    pad_id: int = 0,
) -> list[float]:
    """Each (context, continuation)'s summed log-probability of the continuation's tokens
    after its context, with the prefix every context shares run once (multiple-choice
    scoring: TruthfulQA's primer). The prefix is taken over the contexts alone and leaves
    each at least two tokens of its own, so every position that predicts a continuation
    token is computed in the sequence's own pass."""
    device = torch.device(device)
    contexts = [list(c) for c, _ in pairs]
    continuations = [list(c) for _, c in pairs]
    if not pairs:
        return []
    if min(map(len, contexts)) < 1 or min(map(len, continuations)) < 1:
        raise ValueError("every context and continuation needs at least one token")
    prefix = SharedPrefix.shared_by(model, contexts, device)
    start = prefix.length if prefix else 0
    sequences = [c + x for c, x in zip(contexts, continuations)]
    out = [0.0] * len(pairs)
    for batch in length_sorted_batches([len(s) for s in sequences], batch_size):
        keep = max(len(continuations[i]) for i in batch) + 1
        filled = prefill_after(
            model,
            [sequences[i][start:] for i in batch],
            prefix,
            pad_id,
            device,
            keep_cache=False,
            keep_logits=keep,
        )
        # the kept positions but the last predict each row's last keep - 1 tokens
        log_probs = torch.log_softmax(filled.logits[:, :-1].float(), dim=-1)
        for row, i in enumerate(batch):
            tokens = torch.tensor(continuations[i], device=log_probs.device)
            picked = log_probs[row, -len(tokens) :].gather(-1, tokens[:, None])
            out[i] = float(picked.sum())
    return out
