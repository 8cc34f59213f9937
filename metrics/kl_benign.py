"""KL divergence of the steered model from the unsteered one on benign text: the standard
side-effect measure of a steering intervention (lower is better, 0 = no change).

For each record (a benign prompt and the steered model's answer), the answer's tokens are
read twice in one forward pass each: by the unsteered model and inside the cell's steering
context. At every answer position the next-token distributions are compared,
KL(steered || unsteered) in nats, and the item's value is the mean over its positions.
The prompt is rendered separately for each pass (an input-level method changes it) and the
answer's tokens are the same in both, so the positions line up; an output-level method's
logits processors are applied to the steered pass's logits as decoding would apply them.
No generation: one batched forward pass per batch of items and side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerbench.errors import SteerbenchError
from steerbench.metric import METRICS, Metric, MetricResult, Record
from steerbench.options import Positive


def answer_log_probs(
    lm, prompts: Sequence[str], answers: Sequence[list[int]]
) -> list[torch.Tensor]:
    """Per item, log-probabilities ``[len(answer), vocab]`` of the next token at each answer
    position, as the model reads it now (with the active input and output levels). One
    right-padded forward pass for the batch: padding after a sequence does not change its
    logits under the causal mask, and both sides of the KL see the same batch."""
    from steerbench.model.chat import PromptFormat, format_prompts, prompt_token_ids
    from steerbench.model.levels import active_logits_processors

    tokenizer, model = lm.tokenizer, lm.model
    chat = PromptFormat().uses_chat(tokenizer)
    rendered = format_prompts(tokenizer, list(prompts))
    prompt_ids = prompt_token_ids(tokenizer, rendered, chat=chat)
    sequences = [p + a for p, a in zip(prompt_ids, answers)]
    width = max(map(len, sequences))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences], device=device)
    processing = bool(active_logits_processors())
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        out = []
        for row, (start, answer) in enumerate(zip(map(len, prompt_ids), answers)):
            item = logits[row, start - 1 : start - 1 + len(answer)]
            if processing:  # as decoding applies them: fresh per sequence (they may keep
                # state, such as where the prompt ended), step by step, on the ids so far
                processors = active_logits_processors()
                steps = []
                for t in range(len(answer)):
                    scores = item[t : t + 1]
                    for processor in processors:
                        scores = processor(ids[row : row + 1, : start + t], scores)
                    steps.append(scores)
                item = torch.cat(steps)
            out.append(torch.log_softmax(item, dim=-1))
    return out


@METRICS.register("kl-benign")
class BenignKL(Metric):
    """Mean KL(steered || unsteered) over the answer positions of benign prompts."""

    description = "KL divergence of steered from unsteered next-token distributions (nats)"
    phase = "steering-contrast"
    higher_is_better = False
    value_range = (0.0, math.inf)

    @dataclass
    class Config(Metric.Config):
        max_answer_tokens: Positive = 64
        """Answer positions compared per item (the first ones)."""
        batch_size: Positive = 8
        """Items per forward pass (the steering context is entered once per batch)."""

    def compute(
        self, records: Sequence[Record], *, lm: Any = None, steering: Any = None, **context: Any
    ) -> MetricResult:
        if lm is None:
            raise SteerbenchError("the kl-benign metric needs a model; pass --model")
        answers = [
            lm.tokenizer(r.response, add_special_tokens=False)["input_ids"][
                : self.config.max_answer_tokens
            ]
            for r in records
        ]
        values: list[float | None] = [None] * len(records)  # no answer token: missing
        scored = [i for i, answer in enumerate(answers) if answer]
        if steering is None:  # the unsteered model: both sides are one computation, KL is 0
            for i in scored:
                values[i] = 0.0
            scored = []
        size = self.config.batch_size
        for batch in (scored[i : i + size] for i in range(0, len(scored), size)):
            prompts = [records[i].prompt for i in batch]
            reference = answer_log_probs(lm, prompts, [answers[i] for i in batch])
            with steering():
                steered = answer_log_probs(lm, prompts, [answers[i] for i in batch])
            for i, ref, ste in zip(batch, reference, steered):
                kl = (ste.exp() * (ste - ref)).sum(dim=-1).clamp_min(0).mean()
                values[i] = float(kl)
        return self.result(values)
