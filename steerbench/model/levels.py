"""Where a steering method acts: on the prompt (input), the model (weights and activations)
or the decoding (output).

Model-level methods edit the model object inside ``steer``. Input- and output-level methods
have nothing of the model to edit, so their ``steer`` context registers what they change
here, and the one pipeline every caller feeds the model through reads it: prompt rendering
(``steerbench.model.chat.format_prompts``) adds the active instructions, and generation
(``steerbench.model.generation.generate``) applies the active logits processors. Records keep the
user's request, so metrics that read prompts (the judge, the refusal metric) never see an
injected instruction. The registrations are context variables: they hold inside the
``with`` block, in this thread, and are gone on exit, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is not imported at run time: this module stays cheap to import
    import torch

    # A transformers ``LogitsProcessor``: (input ids, scores) -> new scores.
    LogitsProcessorLike = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LEVELS = ("input", "model", "output")

_INSTRUCTIONS: ContextVar[tuple[str, ...]] = ContextVar("steerbench_instructions", default=())
_PROCESSORS: ContextVar[tuple[Callable[[], LogitsProcessorLike], ...]] = ContextVar(
    "steerbench_logits_processors", default=()
)


@contextmanager
def instruction(text: str) -> Iterator[None]:
    """Inside the block, every rendered prompt carries ``text`` as (part of) its system
    prompt (raw-text models: a paragraph before the request)."""
    token = _INSTRUCTIONS.set((*_INSTRUCTIONS.get(), text))
    try:
        yield
    finally:
        _INSTRUCTIONS.reset(token)


def active_instructions() -> tuple[str, ...]:
    return _INSTRUCTIONS.get()


@contextmanager
def logits_processor(factory: Callable[[], LogitsProcessorLike]) -> Iterator[None]:
    """Inside the block, generation applies a fresh ``factory()`` (a transformers
    ``LogitsProcessor``) to every batch it decodes."""
    token = _PROCESSORS.set((*_PROCESSORS.get(), factory))
    try:
        yield
    finally:
        _PROCESSORS.reset(token)


def active_logits_processors() -> list[LogitsProcessorLike]:
    """Fresh processors for one ``generate`` call (they may keep per-batch state)."""
    return [factory() for factory in _PROCESSORS.get()]
