"""MMLU accuracy of the (steered) model: zero-shot, from next-token log-probabilities.

Each question is rendered in the standard MMLU format (subject header, question, choices
A-D, "Answer:") as raw text (no chat template, as in the original benchmark and
lm-evaluation-harness), and the prediction is the letter among " A", " B", " C", " D"
whose token has the highest next-token logit. Only the last position's logits are
computed. Default: the shipped subset (5 questions from each of the 57 subjects, 285
in all); ``n`` picks a smaller subject-stratified subset of it, or more from the full split
(``python scripts/extract_mmlu.py --full``). Chance level is 0.25.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from steerbench.errors import SteerbenchError
from steerbench.metric import METRICS, SPLIT_EVALUATION, Metric, MetricResult, Record
from steerbench.model.chat import (
    PromptFormat,
    encoded_batches,
    format_prompts,
    n_batches,
    prompt_token_ids,
)
from steerbench.options import NonNegative, Positive
from steerbench.run.prompt_sets import load_mmlu

LETTERS = ("A", "B", "C", "D")
SHIPPED_SUBSET_SIZE = 285


def render_question(question: dict) -> str:
    subject = question["subject"].replace("_", " ")
    lines = [
        f"The following are multiple choice questions (with answers) about {subject}.",
        "",
        question["question"].strip(),
    ]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, question["choices"])]
    lines.append("Answer:")
    return "\n".join(lines)


def stratified_questions(
    n: int | None, seed: int = 0, *, exclude: Collection[str] = ()
) -> list[dict]:
    """``n`` questions spread evenly over subjects (round-robin), deterministic; none of
    the ids in ``exclude`` (the reported questions, when picking validation ones)."""
    full = n is not None and n + len(exclude) > SHIPPED_SUBSET_SIZE
    questions = [q for q in load_mmlu(full=full) if q["id"] not in exclude]
    if n is None or n >= len(questions):
        return questions
    if n < 1:
        raise SteerbenchError(f"mmlu n must be >= 1, got {n}")
    by_subject: dict[str, list[dict]] = defaultdict(list)
    for q in questions:
        by_subject[q["subject"]].append(q)
    generator = torch.Generator().manual_seed(seed)
    pools = {
        s: [qs[i] for i in torch.randperm(len(qs), generator=generator).tolist()]
        for s, qs in sorted(by_subject.items())
    }
    picked: list[dict] = []
    depth = 0
    while len(picked) < n:
        for subject in pools:
            if depth < len(pools[subject]) and len(picked) < n:
                picked.append(pools[subject][depth])
        depth += 1
    return picked


def choice_token_ids(tokenizer) -> list[int]:
    ids = []
    for letter in LETTERS:
        encoded = tokenizer.encode(f" {letter}", add_special_tokens=False)
        ids.append(encoded[-1])
    if len(set(ids)) != len(LETTERS):
        raise SteerbenchError("the tokenizer does not give the answer letters distinct tokens")
    return ids


def predict(model, tokenizer, prompts: list[str], batch_size: int = 8) -> list[str]:
    """The letter with the highest next-token logit for each prompt."""
    device = next(model.parameters()).device
    letter_ids = torch.tensor(choice_token_ids(tokenizer), device=device)
    predictions = [""] * len(prompts)
    batches = encoded_batches(tokenizer, prompts, PromptFormat(chat=False), batch_size, device)
    with torch.inference_mode():
        for batch, encoded in tqdm(
            batches,
            total=n_batches(len(prompts), batch_size),
            desc="mmlu",
            unit="batch",
            leave=False,
        ):
            logits = model(**encoded, logits_to_keep=1, use_cache=False).logits[:, -1]
            best = logits[:, letter_ids].argmax(dim=-1).tolist()
            for index, choice in zip(batch, best):
                predictions[index] = LETTERS[choice]
    return predictions


@METRICS.register("mmlu")
class MMLU(Metric):
    """Zero-shot MMLU accuracy of the model as steered at call time."""

    description = "zero-shot MMLU accuracy (answer-letter logits), chance 0.25"
    phase = "steered-model"
    higher_is_better = True
    kind = "rate"
    value_range = (0.0, 1.0)

    @dataclass
    class Config(Metric.Config):
        n: Positive | None = None
        """Number of questions (default: the shipped 285-question subset)."""
        validation_n: NonNegative = 0
        """Questions of the validation split, none of them reported ones, for a run that
        chooses strengths within an MMLU constraint on validation (0: MMLU is not measured
        on validation)."""
        batch_size: Positive = 8

    def scores_split(self, split: str) -> bool:
        return split == SPLIT_EVALUATION or self.config.validation_n > 0

    def items_read(self, split: str) -> int | None:
        return len(self.questions(split)) if self.scores_split(split) else 0

    def questions(self, split: str = SPLIT_EVALUATION) -> list[dict]:
        """The split's questions: the reported ones, or validation ones disjoint from them."""
        reported = stratified_questions(self.config.n, self.config.seed)
        if split == SPLIT_EVALUATION:
            return reported
        exclude = {q["id"] for q in reported}
        return stratified_questions(self.config.validation_n, self.config.seed, exclude=exclude)

    def compute(
        self, records: Sequence[Record] = (), *, lm: Any = None, **context: Any
    ) -> MetricResult:
        if lm is None:
            raise SteerbenchError("the mmlu metric needs a model; pass --model")
        questions = self.questions(context.get("split", SPLIT_EVALUATION))
        prompts = [render_question(q) for q in questions]
        predictions = predict(lm.model, lm.tokenizer, prompts, self.config.batch_size)
        values = [float(p == q["answer"]) for p, q in zip(predictions, questions)]
        result = self.result(
            values,
            chance=0.25,
            n_subjects=len({q["subject"] for q in questions}),
        )
        result.extra["items"] = [
            {"id": q["id"], "subject": q["subject"], "answer": q["answer"], "predicted": p}
            for q, p in zip(questions, predictions)
        ]
        return result

    def floor_inputs(self, records: Sequence[Record], lm: Any) -> list[list[int]]:
        """The rendered questions' token ids, raw text with the tokenizer's special tokens,
        as ``predict`` tokenises them (``encoded_batches``, no chat template)."""
        questions = stratified_questions(self.config.n, self.config.seed)
        prompts = [render_question(q) for q in questions]
        texts = format_prompts(lm.tokenizer, prompts, PromptFormat(chat=False))
        return prompt_token_ids(lm.tokenizer, texts, chat=False)
