"""Refusal logit bias: add a bias to the first tokens of refusal phrases during the first
generated tokens, a crude decoding-level baseline that shows how much of "refusal removal"
is only about the answer's first words.

``fit`` reads nothing from the prompts' activations: it tokenises the configured refusal
openers (with and without a leading space) and keeps their first tokens. Strength is the
logit bias added to those tokens at each of the first ``window`` decoding steps: negative
suppresses refusals (-10 all but bans them), positive provokes them, 0 is unchanged. It acts
through a transformers ``LogitsProcessor`` (``steerbench.model.levels``), so it changes generated
text only: MMLU, which reads answer-letter logits without decoding, is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from steerbench.errors import SteerbenchError
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod, TensorSpec
from steerbench.model.levels import logits_processor

OPENERS = [
    "I'm sorry",
    "I am sorry",
    "Sorry",
    "I apologize",
    "I cannot",
    "I can't",
    "I can not",
    "I won't",
    "I will not",
    "I'm unable",
    "I am unable",
    "I'm not able",
    "Unfortunately",
    "As an AI",
    "As a language model",
]


class OpeningTokenBias:
    """A ``LogitsProcessor``: ``scores[:, token_ids] += bias`` for the first ``window``
    steps of one ``generate`` call (its first call fixes where the prompt ends)."""

    def __init__(self, token_ids: torch.Tensor, bias: float, window: int) -> None:
        self.token_ids, self.bias, self.window = token_ids, bias, window
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        if input_ids.shape[1] - self.prompt_length < self.window:
            scores = scores.clone()
            scores[:, self.token_ids.to(scores.device)] += self.bias
        return scores


@METHODS.register("refusal-logit-bias")
class RefusalLogitBias(SteeringMethod):
    """Bias the opening tokens of refusal phrases while the answer starts."""

    description = "logit bias on refusal openers' first tokens (decoding level)"
    level = "output"
    neutral_strength = 0.0
    default_strengths = (-10.0, -5.0, 5.0)
    artifact_tensors = {"token_ids": TensorSpec("index", bound="vocab_size")}

    @dataclass
    class Config:
        openers: list[str] = field(default_factory=lambda: list(OPENERS))
        """Phrases a refusal starts with; the first token of each is biased."""
        window: int = 3
        """How many generated tokens, from the first, get the bias."""

        def __post_init__(self) -> None:
            if not self.openers or not all(isinstance(o, str) and o.strip() for o in self.openers):
                raise SteerbenchError("refusal-logit-bias: openers must be non-empty phrases")
            if self.window < 1:
                raise SteerbenchError(f"refusal-logit-bias: window must be >= 1, got {self.window}")

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        first_tokens = set()
        for opener in self.config.openers:
            for text in (opener, " " + opener):
                ids = ctx.tokenizer(text, add_special_tokens=False)["input_ids"]
                if ids:
                    first_tokens.add(int(ids[0]))
        token_ids = torch.tensor(sorted(first_tokens), dtype=torch.long)
        tokens = [ctx.tokenizer.decode([i]) for i in token_ids.tolist()]
        model: Any = ctx.model  # a Hugging Face causal LM
        vocab_size = int(model.get_output_embeddings().weight.shape[0])
        return self.make_artifact(
            ctx,
            positive,
            negative,
            {"token_ids": token_ids},
            vocab_size=vocab_size,
            summary={"tokens": tokens},
        )

    def apply(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        token_ids = artifact.tensors["token_ids"].long()
        window = self.config.window
        return logits_processor(lambda: OpeningTokenBias(token_ids, strength, window))
