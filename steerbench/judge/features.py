"""What the trained judge reads of a (prompt, response): one forward pass of the local judge
over the digit-grade question (``prompts.grade_message``), the prefix every message shares
run once. Read at once from that pass: the five digit-grade probabilities at the answer
position, and the residual stream at a few depths, at the answer position and averaged over
the message. A judge that has read a response this way has paid one forward pass; a
scikit-learn head (``steerbench.judge.head``) maps the features to a score, so asking more
questions costs nothing more.

Responses are cut to their first ``max_response_tokens`` tokens (in the judge's
tokenisation) before they are quoted: the benchmark generates 48-64 tokens, and a long
public answer would otherwise set the cost of a batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from steerbench.judge.prompts import grade_message

MAX_RESPONSE_TOKENS = 128
DEPTHS = (0.5, 0.75, 1.0)
"""Where the residual stream is read, as fractions of the judge's depth (1.0: the output of
the last layer, after its final norm)."""


@dataclass(frozen=True)
class FeatureSpec:
    """How the features were read: a head fitted on one spec only applies to that spec."""

    max_response_tokens: int = MAX_RESPONSE_TOKENS
    depths: tuple[float, ...] = DEPTHS

    def layers(self, n_layers: int) -> list[int]:
        """Indices into a model's ``hidden_states`` (0 = embeddings, n_layers = last)."""
        return [round(depth * n_layers) for depth in self.depths]


def truncate_response(tokenizer: Any, response: str, max_tokens: int) -> str:
    """The first ``max_tokens`` tokens of ``response``, decoded back to text."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return response if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def judge_features(
    lm: Any,
    prompts: Sequence[str],
    responses: Sequence[str],
    spec: FeatureSpec,
    *,
    batch_size: int = 8,
    on_batch: Callable[[int], object] | None = None,
) -> np.ndarray:
    """``[len(prompts), 5 + 2 * len(depths) * d]`` float32 features, in input order."""
    import torch

    from steerbench.judge.local import LocalJudge
    from steerbench.model.chat import length_sorted_batches
    from steerbench.model.kv_batch import SharedPrefix, plain_kv_cache, prefill_after

    judge = LocalJudge(lm, 1, batch_size)
    tokenizer, model = lm.tokenizer, lm.model
    messages = [
        grade_message(p, truncate_response(tokenizer, r, spec.max_response_tokens))
        for p, r in zip(prompts, responses)
    ]
    ids = judge.token_ids(messages)
    digits = judge.digit_ids()
    layers = spec.layers(model.config.num_hidden_layers)
    width = model.config.hidden_size
    out = np.zeros((len(ids), 5 + 2 * len(layers) * width), dtype=np.float32)
    if not ids:
        return out
    head = instruction_head(judge)
    if any(s[: len(head)] != head for s in ids):
        raise ValueError("a grading message does not start with the grading instruction")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        # the instruction's cache, run once; its tokens are never part of a mean
        prefix = SharedPrefix.of(model, head, device) if plain_kv_cache(model) else None
        start = prefix.length if prefix else 0
        for batch in length_sorted_batches([len(s) for s in ids], batch_size):
            filled = prefill_after(
                model,
                [ids[i][start:] for i in batch],
                prefix,
                pad,
                device,
                keep_cache=False,
                hidden_states=True,
            )
            assert filled.hidden is not None
            real = filled.mask[:, start:] == 1
            own = (real & (filled.positions >= len(head))).unsqueeze(-1).float()
            grades = torch.softmax(filled.logits[:, digits].float(), dim=-1)
            last = [filled.hidden[layer][:, -1].float() for layer in layers]
            mean = [(filled.hidden[layer].float() * own).sum(1) / own.sum(1) for layer in layers]
            out[batch] = torch.cat([grades, *last, *mean], dim=-1).cpu().numpy()
            if on_batch is not None:
                on_batch(len(batch))
    return out


def instruction_head(judge: Any) -> list[int]:
    """The tokens every grading message starts with (chat template and grading instruction
    up to the quoted request): run once, and left out of the averaged features."""
    import os

    first, second = judge.token_ids([grade_message("a", "a"), grade_message("b", "b")])
    # token-id lists, not paths: commonprefix compares them element by element
    return first[: len(os.path.commonprefix([first, second]))]  # noqa: RUF071
