"""KL divergence of the steered model from the unsteered one on fixed benign text: the
standard side-effect measure of a steering intervention (lower is better, 0 = no change).

Definition. The fixed text of each benign prompt is the *unsteered* model's own greedy
answer to it (up to ``max_answer_tokens`` tokens, its end-of-answer token included). At
every answer position t the next-token distributions given prompt + answer[:t] are compared,
KL(unsteered || steered) in nats, and the item's value is the mean over its positions. This
is the form Arditi et al. (2024) and SteeringControl use for side effects: the expectation is
taken under the unsteered model on text it would write itself, and because the text is fixed
(the same tokens in every cell, whatever a cell's own generations were) every cell is
compared on the same positions. (Up to 0.1 this metric read each cell's own answers and
measured KL(steered || unsteered).)

Cost. The reference (the greedy answers and the unsteered distributions over them) is
computed once per model, prompt list and options and kept on the metric object, which the
runner builds once per run; each cell then costs one steered forward pass per item
(batched, left-padded, logits only at the answer positions). The prompt is rendered under the
cell's steering (an input-level method changes it; the answer tokens stay the same, so the
positions line up) and an output-level method's logits processors are applied to the
steered logits as decoding applies them. A method scoped to generated tokens only (decoding
passes that extend a KV cache) does not act on a plain forward pass, so it reads 0 here.

Compression. The reference keeps, per position, its top-k log-probabilities and the log of
the remaining (tail) mass, and the KL is taken on the partition {each top-k token, the rest}:
sum_K r_i log(r_i / s_i) + r_T log(r_T / s_T). By the data-processing inequality this is a
lower bound on the exact KL, equal to it when k >= vocab. The gap is r_T KL(r' || s'), with
r', s' the two distributions conditioned on the tail; r' is unknown but each tail token has
r_j <= r_k (the k-th largest), so r'_j <= c = min(1, r_k / r_T), and the largest KL(r' || s')
over such r' (a convex function on a polytope: a vertex, c on the tokens s' makes least
likely) bounds it: ``gap_bound`` computes that maximum from the steered distribution's
least likely tail tokens. The result's ``extra`` reports the mean reference tail
mass and the mean and largest per-item gap bound (the exact aggregate lies in
[value, value + gap_bound_mean]).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerbench.errors import SteerbenchError
from steerbench.metric import METRICS, Metric, MetricResult, Record
from steerbench.options import Positive

log = logging.getLogger(__name__)

TAIL_RANKS = 1024
"""The most least-likely steered tail tokens the gap bound reads per position."""


@dataclass
class ReferenceBatch:
    """One forward pass of the reference: its items and their compressed distributions,
    laid out as the steered pass returns its logits (``[items, positions, ...]``, an item's
    n answer positions the last n of the row, ``valid`` marking them)."""

    items: list[int]
    prompts: list[str]
    answers: list[list[int]]
    indices: torch.Tensor  # [B, T, k] the reference's top-k tokens, most likely first
    log_probs: torch.Tensor  # [B, T, k] their log-probabilities
    log_tail: torch.Tensor  # [B, T] log of the mass outside them (-inf: none)
    valid: torch.Tensor  # [B, T] bool


@dataclass
class Reference:
    """The unsteered model's fixed answers to a prompt list and its distributions over them."""

    model: Callable[[], Any]  # a weak reference to the model it was computed with
    answers: list[list[int]]  # per prompt; [] where the answer has no text token
    prompt_ids: list[list[int]]  # per prompt, rendered unsteered
    batches: list[ReferenceBatch]
    tail_mass: dict[int, float]  # per scored item: mean reference tail mass over positions


def answer_log_probs(
    lm: Any, prompts: Sequence[str], answers: Sequence[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities ``[B, T, vocab]`` (float32) of the next token at each answer
    position, as the model reads it now (with the active input and output levels), and the
    ``[B, T]`` mask of real positions (T = the longest answer; item b's are its last
    ``len(answers[b])``). One forward pass: each row is prompt + answer without its last
    token, left-padded with explicit position ids (padding before a sequence is hidden by
    the mask and does not shift its positions), so each row's last n logits predict its n
    answer tokens and only those are computed; the prefix the prompts share is run once
    (``steerbench.model.kv_batch.prefill_after``, as generation prefills)."""
    from steerbench.model.chat import PromptFormat, format_prompts, prompt_token_ids
    from steerbench.model.kv_batch import SharedPrefix, prefill_after

    tokenizer, model = lm.tokenizer, lm.model
    rendered = format_prompts(tokenizer, list(prompts))
    prompt_ids = prompt_token_ids(tokenizer, rendered, chat=PromptFormat().uses_chat(tokenizer))
    sequences = [p + a[:-1] for p, a in zip(prompt_ids, answers)]
    positions = max(map(len, answers))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = torch.tensor([len(a) for a in answers], device=device)
    valid = torch.arange(positions, device=device) >= positions - lengths[:, None]
    with torch.inference_mode():
        # the chat template's system turn, shared by every prompt, is run once: taken over
        # the prompts alone, it leaves each two tokens of its own, so every position that
        # predicts an answer token is computed in the sequence's own pass
        prefix = SharedPrefix.shared_by(model, prompt_ids, device)
        start = prefix.length if prefix else 0
        filled = prefill_after(
            model,
            [s[start:] for s in sequences],
            prefix,
            pad,
            device,
            keep_cache=False,
            keep_logits=positions,
        )
        logits = filled.logits.float()
        logits = logits[:, None] if positions == 1 else logits
        logits = _processed(logits, prompt_ids, answers, device)
        return torch.log_softmax(logits, dim=-1), valid


def _processed(
    logits: torch.Tensor, prompt_ids: list[list[int]], answers: Sequence[list[int]], device
) -> torch.Tensor:
    """The active logits processors applied as decoding applies them: fresh per sequence
    (they may keep state, such as where the prompt ended), step by step, on the ids so far.
    Processors are sequential black boxes, so this is the one loop over positions."""
    from steerbench.model.levels import active_logits_processors

    if not active_logits_processors():
        return logits
    positions = logits.shape[1]
    for row, (prompt, answer) in enumerate(zip(prompt_ids, answers)):
        processors = active_logits_processors()
        ids = torch.tensor([prompt + answer], device=device)
        start = positions - len(answer)
        for t in range(len(answer)):
            scores = logits[row, start + t][None]
            for processor in processors:
                scores = processor(ids[:, : len(prompt) + t], scores)
            logits[row, start + t] = scores[0]
    return logits


def compress(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """The top-k tokens of each distribution ``[..., vocab]``, their log-probabilities
    (most likely first) and the log of the remaining mass (-inf when k >= vocab)."""
    values, indices = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)
    log_tail = log_probs.scatter(-1, indices, -math.inf).logsumexp(-1)
    return indices, values, log_tail


def partition_kl(
    steered: torch.Tensor, indices: torch.Tensor, log_probs: torch.Tensor, log_tail: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position, KL(reference || steered) on the partition {each top-k token, the rest}
    (a lower bound on the exact KL, equal to it when the tail is empty) and an upper bound
    on what it misses (``gap_bound``). ``steered``: ``[..., vocab]`` log-probabilities; the
    reference as ``compress`` returns it."""
    steered_top = steered.gather(-1, indices)
    rest = steered.scatter(-1, indices, -math.inf)
    steered_tail = rest.logsumexp(-1)
    tail = log_tail.exp()
    kl = (log_probs.exp() * (log_probs - steered_top)).sum(-1)
    kl = kl + torch.where(tail > 0, tail * (log_tail - steered_tail), 0.0)
    rest.scatter_(-1, indices, math.inf)  # now the tail tokens' log-probabilities, else +inf
    bound = gap_bound(rest, steered_tail, log_probs[..., -1], log_tail, indices.shape[-1])
    return kl.clamp_min(0.0), bound


def gap_bound(
    steered_rest: torch.Tensor,
    steered_tail: torch.Tensor,
    log_kth: torch.Tensor,
    log_tail: torch.Tensor,
    k: int,
) -> torch.Tensor:
    """The largest r_T KL(r' || s') any reference tail could give: r', s' are the reference
    and steered distributions conditioned on the tail, and all that is known of r' is
    r'_j <= c = min(1, r_k / r_T). KL(r' || s') is convex in r', so its maximum over that
    polytope is at a vertex, m = floor(1/c) tokens at c and the rest 1 - m c on one more;
    every vertex has the same sum r' log r', and the best puts the mass on the tokens of
    least s'. Those are read among the m + 1 least likely (at most ``TAIL_RANKS``: mass
    beyond the last one read goes to it, which can only overstate the bound).
    ``steered_rest``: the steered log-probabilities with +inf at the reference's k top
    tokens."""
    tail = log_tail.exp()
    log_c = (log_kth - log_tail).clamp(max=0.0)
    c = log_c.exp()
    m = torch.floor(1.0 / c)
    size = steered_rest.shape[-1] - k  # tokens in the tail
    needed = int(m[tail > 0].max().clamp(max=size)) + 1 if bool((tail > 0).any()) else 0
    count = min(needed, size, TAIL_RANKS)
    if count <= 0:  # no tail: the partition is the vocabulary, the KL exact
        return torch.zeros_like(tail)
    least = steered_rest.topk(count, dim=-1, largest=False).values  # ascending
    weights = steered_tail[..., None] - least  # -log s'_j, descending, >= 0
    left = (1.0 - m * c).clamp_min(0.0)
    negentropy = m * c * log_c + torch.xlogy(left, left)
    rank = torch.arange(count, device=c.device, dtype=c.dtype)
    share = (1.0 - rank * c[..., None]).clamp_min(0.0)  # mass left for the rank-th token;
    share[..., :-1] = torch.minimum(share[..., :-1], c[..., None])  # the last takes the rest
    cross = (share * weights).sum(-1)
    return torch.where(tail > 0, tail * (negentropy + cross), 0.0).clamp_min(0.0)


@METRICS.register("kl-benign")
class BenignKL(Metric):
    """Mean KL(unsteered || steered) over the unsteered model's answers to benign prompts."""

    description = (
        "KL(unsteered || steered) of next-token distributions on the unsteered model's "
        "answers to benign prompts (nats)"
    )
    phase = "steering-contrast"
    higher_is_better = False
    value_range = (0.0, math.inf)

    @dataclass
    class Config(Metric.Config):
        max_answer_tokens: Positive = 64
        """Length limit of the fixed answers (the unsteered model's greedy answers)."""
        batch_size: Positive = 8
        """Items per forward pass (and rows decoded together for the fixed answers)."""
        top_k: Positive = 64
        """Reference tokens kept per position; the rest of its mass is one outcome, which
        can only understate the KL (by at most the reported gap bound; none at k >= vocab)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._references: dict[tuple, Reference] = {}

    def compute(
        self, records: Sequence[Record], *, lm: Any = None, steering: Any = None, **context: Any
    ) -> MetricResult:
        if lm is None:
            raise SteerbenchError("the kl-benign metric needs a model; pass --model")
        if steering is None:  # the unsteered model: both sides are one distribution, KL is 0
            return self.result(
                [0.0] * len(records),
                reference_tail_mass_mean=None,
                gap_bound_mean=0.0,
                gap_bound_max=0.0,
            )
        reference = self.reference(records, lm)
        values: list[float | None] = [None] * len(records)  # no answer to compare: missing
        bounds: dict[int, float] = {}
        with steering():
            for batch in reference.batches:
                kl, bound = steered_kl(lm, batch)
                for i, value, gap in zip(batch.items, kl, bound):
                    values[i], bounds[i] = value, gap
        scored = list(bounds)
        return self.result(
            values,
            reference_tail_mass_mean=_mean([reference.tail_mass[i] for i in scored]),
            gap_bound_mean=_mean(list(bounds.values())),
            gap_bound_max=max(bounds.values(), default=None),
        )

    def scores_split(self, split: str) -> bool:
        """Validation too: a task may bound the side effect where it chooses a strength."""
        return True

    def floor_inputs(self, records: Sequence[Record], lm: Any) -> list[list[int]] | None:
        """What the steered pass reads, unsteered: each scored item's rendered prompt and
        reference answer (without its last token, which no position is asked to predict)."""
        reference = self.reference(records, lm)
        return [
            prompt + answer[:-1]
            for prompt, answer in zip(reference.prompt_ids, reference.answers)
            if answer
        ]

    def reference(self, records: Sequence[Record], lm: Any) -> Reference:
        """The fixed answers to ``records``' prompts and their unsteered distributions,
        computed once per model, prompt list and options (then reused by every cell)."""
        prompts = tuple(record.prompt for record in records)
        options = tuple(sorted(self.options().items()))
        name, revision = getattr(lm, "name", None), getattr(lm, "revision", None)
        key = (name, revision, id(lm.model), prompts, options)
        self._references = {k: r for k, r in self._references.items() if r.model() is not None}
        found = self._references.get(key)
        if found is None or found.model() is not lm.model:
            found = self._references[key] = self._build_reference(list(prompts), lm)
        return found

    def _build_reference(self, prompts: list[str], lm: Any) -> Reference:
        """Greedy answers of the unsteered model, then one forward pass per batch over them."""
        from steerbench.model import generation
        from steerbench.model.chat import (
            PromptFormat,
            format_prompts,
            length_sorted_batches,
            prompt_token_ids,
        )

        config, tokenizer = self.config, lm.tokenizer
        fmt = PromptFormat()
        settings = generation.GenerationSettings(
            max_new_tokens=config.max_answer_tokens, batch_size=config.batch_size
        )
        log.info("kl-benign: the unsteered model's answers to %d prompts", len(prompts))
        tokens = generation.generate_tokens(
            lm.model, tokenizer, prompts, settings, fmt, progress=False
        )
        special = set(tokenizer.all_special_ids)
        answers = [a if any(t not in special for t in a) else [] for a in tokens]
        rendered = format_prompts(tokenizer, prompts, fmt)
        prompt_ids = prompt_token_ids(tokenizer, rendered, chat=fmt.uses_chat(tokenizer))
        scored = [i for i, answer in enumerate(answers) if answer]
        lengths = [len(prompt_ids[i]) + len(answers[i]) for i in scored]
        batches: list[ReferenceBatch] = []
        tail_mass: dict[int, float] = {}
        for group in length_sorted_batches(lengths, config.batch_size) if scored else []:
            items = [scored[j] for j in group]
            batch = self._reference_batch(lm, items, [prompts[i] for i in items], answers)
            batches.append(batch)
            tails = torch.where(batch.valid, batch.log_tail.exp(), 0.0).sum(-1)
            tail_mass.update(zip(items, (tails / batch.valid.sum(-1)).tolist()))
        return Reference(weakref.ref(lm.model), answers, prompt_ids, batches, tail_mass)

    def _reference_batch(
        self, lm: Any, items: list[int], prompts: list[str], answers: list[list[int]]
    ) -> ReferenceBatch:
        chosen = [answers[i] for i in items]
        log_probs, valid = answer_log_probs(lm, prompts, chosen)
        indices, values, log_tail = compress(log_probs, self.config.top_k)
        del log_probs
        log_tail = log_tail.masked_fill(~valid, -math.inf)  # no tail (nor bound) off answers
        return ReferenceBatch(
            items,
            prompts,
            chosen,
            indices.to(torch.int32).cpu(),
            values.cpu(),
            log_tail.cpu(),
            valid.cpu(),
        )


def steered_kl(lm: Any, batch: ReferenceBatch) -> tuple[list[float], list[float]]:
    """One batch's per-item KL and gap bound, each the mean over its answer positions, from
    one forward pass of the model as it is now (inside the cell's steering)."""
    steered, _ = answer_log_probs(lm, batch.prompts, batch.answers)
    device = steered.device
    valid = batch.valid.to(device)
    kl, bound = partition_kl(
        steered,
        batch.indices.to(device, torch.long),
        batch.log_probs.to(device),
        batch.log_tail.to(device),
    )
    count = valid.sum(-1)
    kl = torch.where(valid, kl, 0.0).sum(-1) / count
    bound = torch.where(valid, bound, 0.0).sum(-1) / count
    return kl.tolist(), bound.tolist()


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
