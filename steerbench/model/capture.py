"""Activation capture: last-real-token activations at every layer in batched forward passes.

This is the measurement every contrastive method starts from (CNA reads ``mlp_in``, CAA
reads ``resid_post``). Only the decoder backbone runs (the vocabulary projection is
skipped: it is the single largest matmul and nothing here needs logits), and only the
last position of each site is copied out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from steerbench.errors import SteerbenchError
from steerbench.model.adapter import SITE_KINDS, ModelAdapter, record_last_token
from steerbench.model.chat import PromptFormat, encoded_batches, n_batches


@dataclass
class Activations:
    """Per-prompt, per-layer activations in float32: ``{kind: [n_prompts, n_layers, width]}``."""

    by_kind: dict[str, torch.Tensor]

    def __getitem__(self, kind: str) -> torch.Tensor:
        return self.by_kind[kind]

    @property
    def mlp_in(self) -> torch.Tensor:
        return self.by_kind["mlp_in"]

    @property
    def resid_post(self) -> torch.Tensor:
        return self.by_kind["resid_post"]


def capture_last_token(
    model,
    tokenizer,
    prompts: list[str],
    *,
    kinds: tuple[str, ...] = SITE_KINDS,
    fmt: PromptFormat | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> Activations:
    """Run ``prompts`` in length-sorted batches and return last-token activations."""
    unknown = set(kinds) - set(SITE_KINDS)
    if unknown:
        raise SteerbenchError(f"unknown activation kinds {sorted(unknown)}; use {SITE_KINDS}")
    if not prompts:
        raise SteerbenchError("no prompts to capture activations from; check the prompt set")
    fmt = fmt or PromptFormat()
    adapter = ModelAdapter.from_model(model)
    device = next(model.parameters()).device
    out = {
        kind: torch.empty(len(prompts), adapter.n_layers, adapter.site_width(kind))
        for kind in kinds
    }
    batches = encoded_batches(tokenizer, prompts, fmt, batch_size, device)
    total = n_batches(len(prompts), batch_size)
    with torch.inference_mode():
        for batch, encoded in tqdm(
            batches, total=total, desc="capture", unit="batch", disable=not progress, leave=False
        ):
            sink: dict[str, list[torch.Tensor]] = {}
            with record_last_token(adapter, kinds, sink):
                adapter.backbone(**encoded, use_cache=False)
            index = torch.tensor(batch)
            for kind in kinds:
                stacked = torch.stack(
                    [sink[f"{kind}.{layer}"][0] for layer in range(adapter.n_layers)], dim=1
                )
                out[kind][index] = stacked.cpu()
    return Activations(out)
