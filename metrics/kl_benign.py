"""KL divergence of the steered model from the unsteered one on benign text: the standard
side-effect measure of a steering intervention (lower is better, 0 = no change).

For each record (a benign prompt and the steered model's answer), the answer's tokens are
read twice in one forward pass each: by the unsteered model and inside the cell's steering
context. At every answer position the next-token distributions are compared,
KL(steered || unsteered) in nats, and the item's value is the mean over its positions.
The prompt is rendered separately for each pass (an input-level method changes it) and the
answer's tokens are the same in both, so the positions line up; an output-level method's
logits processors are applied to the steered pass's logits as decoding would apply them.
No generation: one forward pass per item and side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from steerbench.errors import SteerbenchError
from steerbench.metric import METRICS, Metric, MetricResult, Record, make_result


def answer_log_probs(lm, prompt: str, answer_ids: list[int]) -> torch.Tensor:
    """Log-probabilities ``[len(answer_ids), vocab]`` of the next token at each answer
    position, as the model reads it now (with the active input and output levels)."""
    from steerbench.levels import active_logits_processors
    from steerbench.prompts import PromptFormat, format_prompts

    tokenizer, model = lm.tokenizer, lm.model
    chat = PromptFormat().uses_chat(tokenizer)
    rendered = format_prompts(tokenizer, [prompt])[0]
    prompt_ids = tokenizer(rendered, add_special_tokens=not chat)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids], device=next(model.parameters()).device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        processors = active_logits_processors()
        if processors:
            steps = []
            for t in range(len(answer_ids)):
                scores = logits[t : t + 1]
                for processor in processors:
                    scores = processor(ids[:, : len(prompt_ids) + t], scores)
                steps.append(scores)
            logits = torch.cat(steps)
    return torch.log_softmax(logits, dim=-1)


@METRICS.register("kl-benign")
class BenignKL(Metric):
    """Mean KL(steered || unsteered) over the answer positions of benign prompts."""

    description = "KL divergence of steered from unsteered next-token distributions (nats)"
    needs_model = True
    uses_steering = True
    higher_is_better = False
    value_range = (0.0, math.inf)

    @dataclass
    class Config(Metric.Config):
        max_answer_tokens: int = 64
        """Answer positions compared per item (the first ones)."""

    def compute(self, records: Sequence[Record], *, lm=None, steering=None) -> MetricResult:
        if lm is None:
            raise SteerbenchError("the kl-benign metric needs a model; pass --model")
        steering = steering or nullcontext
        values: list[float | None] = []
        for record in records:
            answer_ids = lm.tokenizer(record.response, add_special_tokens=False)["input_ids"]
            answer_ids = answer_ids[: self.config.max_answer_tokens]
            if not answer_ids:
                values.append(None)  # nothing to compare: counted as missing
                continue
            reference = answer_log_probs(lm, record.prompt, answer_ids)
            with steering():
                steered = answer_log_probs(lm, record.prompt, answer_ids)
            kl = (steered.exp() * (steered - reference)).sum(dim=-1).clamp_min(0).mean()
            values.append(float(kl))
        return make_result(self.name, values, seed=self.config.seed, kind=self.kind)
