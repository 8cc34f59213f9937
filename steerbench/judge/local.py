"""A judge that runs on a loaded Hugging Face model (``LoadedModel``): greedy batched
generation of a rubric's answer, or, read in one forward pass, the probabilities of the
digit grades 1-5 at the answer position (nothing to parse, so nothing goes missing)."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

from steerbench.errors import SteerbenchError
from steerbench.judge.prompts import GRADES

_LOADED: dict[str, Any] = {}
"""Judge models loaded by name, once per process (a model load is the expensive part)."""


def local_judge_model(spec: str, lm: Any) -> Any:
    """The judge model ``spec``, loaded once per process on ``lm``'s device; ``lm`` itself
    when it is that model (the evaluated model judges as is)."""
    if lm is not None and lm.name == spec:
        return lm
    if spec not in _LOADED:
        from steerbench.model.loading import load_model

        device = str(lm.device) if lm is not None else "auto"
        _LOADED[spec] = load_model(spec, device=device)
    return _LOADED[spec]


class LocalJudge:
    """A Hugging Face model answering the rubric with greedy batched generation."""

    def __init__(self, lm: Any, max_tokens: int, batch_size: int) -> None:
        self.lm, self.max_tokens, self.batch_size = lm, max_tokens, batch_size
        self.name = f"local:{lm.name}@{lm.revision}"

    @property
    def weights(self) -> Any:
        """What tells this judge apart from another of the same name (a cache's scope)."""
        return self.lm.model

    def judge(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """The answer to each (system, user) conversation; the first one's system prompt
        is everyone's (a rubric has one)."""
        from steerbench.model.chat import PromptFormat
        from steerbench.model.generation import GenerationSettings, generate

        system = conversations[0][0]["content"] if conversations else None
        settings = GenerationSettings(max_new_tokens=self.max_tokens, batch_size=self.batch_size)
        return generate(
            self.lm.model,
            self.lm.tokenizer,
            [c[1]["content"] for c in conversations],
            settings,
            PromptFormat(chat=True, system_prompt=system),
            progress=True,
        )

    def digit_ids(self) -> list[int]:
        """The token id of each grade digit; a tokenizer that splits one cannot be read."""
        out = []
        for digit in GRADES:
            ids = self.lm.tokenizer(digit, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise SteerbenchError(
                    f"judge {self.lm.name}: the digit {digit!r} is not one token, so its "
                    f"probability cannot be read; use mode: rubric"
                )
            out.append(ids[0])
        return out

    def token_ids(self, messages: list[str]) -> list[list[int]]:
        """Each grading message's token ids as the judge reads them (chat template with the
        generation prompt, special tokens from the template): the judge's own input, one
        plain forward pass over which is its cost floor."""
        from steerbench.model.chat import PromptFormat, format_prompts, prompt_token_ids

        if not messages:  # a tokenizer cannot encode an empty batch
            return []
        texts = format_prompts(self.lm.tokenizer, messages, PromptFormat(chat=True))
        return prompt_token_ids(self.lm.tokenizer, texts, chat=True)

    def grade(self, messages: list[str]) -> list[list[float]]:
        """The judge's next-token probabilities of the digits 1-5 after each message (chat
        template, generation prompt), renormalised over the five: one forward pass each,
        the prefix every message shares (system turn and grading instruction) run once."""
        import torch

        from steerbench.model.prefix import last_logits

        tokenizer, model = self.lm.tokenizer, self.lm.model
        digit_ids = self.digit_ids()
        ids = self.token_ids(messages)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        device = next(model.parameters()).device
        with torch.inference_mode(), tqdm(total=len(messages), desc="judge", unit="item") as bar:
            logits = last_logits(
                model,
                ids,
                self.batch_size,
                device,
                columns=digit_ids,
                pad_id=pad,
                on_batch=bar.update,
            )
        return torch.softmax(logits, dim=-1).tolist()
