"""Directional ablation (Arditi et al. 2024, "Refusal in language models is mediated by a
single direction").

The refusal direction r is the normalised difference of mean residual-stream activations
(last token) between positive and negative prompts at one layer (default: CAA's rule,
``floor(0.6 * n_layers)``; ``layer`` overrides). Steering with strength s removes s times
the projection onto r from the residual stream: x' = x - s (x.r) r (s = 1 ablates the
direction, 0 is unchanged, s < 0 amplifies it: s = -1 doubles the component along r, the
direction added in proportion to how much of it each activation already carries; Arditi
et al.'s constant addition of the mean difference at one layer is ``caa`` at +1).

Implementation: the residual stream is the sum of what the embedding and every layer's
attention ``o_proj`` and MLP ``down_proj`` write into it, so applying the projection
P = I - s r r^T to each of those weights (and biases) applies it to the residual stream at
every layer and position, with no per-token work (Arditi et al.'s weight
orthogonalisation, generalised to s). The saved weights are restored exactly on exit.
Gemma 2/3 normalise each write before adding it, so there the projection is applied to
the normalised writes by forward hooks. Models with tied input and output embeddings
(Llama-3.2-1B/3B, Qwen2.5-0.5B-3B, Gemma) share one matrix between the embedding and the
unembedding: editing it would also project the readout, which is not the method, so the
embedding's output is projected by a hook there instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from steerbench.errors import SteerbenchError
from steerbench.interventions import check_scope, decoding_passes
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod, TensorSpec
from steerbench.model.adapter import ModelAdapter, default_steering_layer


def residual_writers(adapter: ModelAdapter) -> list[nn.Module]:
    """Every module whose output is added to the residual stream (embedding included)."""
    backbone: Any = adapter.backbone  # Hugging Face children are dynamic attributes
    writers: list[nn.Module] = [backbone.embed_tokens]
    for layer in range(adapter.n_layers):
        writers += adapter.residual_writers(layer)
    return writers


@contextmanager
def project_out(
    model: nn.Module, direction: torch.Tensor, strength: float, scope: str = "all"
) -> Iterator[None]:
    """Apply x -> x - s (x.r) r to every residual-stream write; restore on exit. With
    ``scope="generation"`` only in decoding steps (hooks, see ``steerbench.interventions``)."""
    adapter = ModelAdapter.from_model(model)
    writers = residual_writers(adapter)
    if scope == "generation":
        with (
            decoding_passes(adapter) as decoding,
            _project_by_hooks(adapter, writers, direction, strength, decoding),
        ):
            yield
        return
    if adapter.has_post_norms:  # writes pass through a norm: project them with hooks
        hooked, folded = writers, []
    elif adapter.embeddings_tied:  # the embedding matrix is also the readout: hook it
        hooked, folded = writers[:1], writers[1:]
    else:
        hooked, folded = [], writers
    with (
        _project_by_hooks(adapter, hooked, direction, strength),
        _project_weights(folded, direction, strength),
    ):
        yield


@contextmanager
def _project_weights(
    modules: list[nn.Module], direction: torch.Tensor, strength: float
) -> Iterator[None]:
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for module in modules:
                weight = cast(torch.Tensor, module.weight)
                r = direction.to(device=weight.device, dtype=torch.float32)
                saved.append((weight, weight.detach().clone()))
                w = weight.float()
                if isinstance(module, nn.Embedding):  # rows are written: [vocab, d_model]
                    w -= strength * torch.outer(w @ r, r)
                else:  # Linear output rows: [d_model, d_in]
                    w -= strength * torch.outer(r, r @ w)
                weight.copy_(w)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    saved.append((bias, bias.detach().clone()))
                    b = bias.float()
                    bias.copy_(b - strength * (b @ r) * r)
        yield
    finally:
        with torch.no_grad():
            for tensor, original in reversed(saved):
                tensor.copy_(original)


@contextmanager
def _project_by_hooks(
    adapter: ModelAdapter,
    modules: list[nn.Module],
    direction: torch.Tensor,
    strength: float,
    only_when: list[bool] | None = None,
) -> Iterator[None]:
    param = next(adapter.model.parameters())
    r = direction.to(device=param.device, dtype=param.dtype)

    def hook(_module, _args, output):
        if only_when is not None and not only_when[0]:
            return None
        return output - strength * (output @ r).unsqueeze(-1) * r

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@METHODS.register("directional-ablation")
class DirectionalAblation(SteeringMethod):
    """Remove s times the component along the refusal direction from the residual stream."""

    description = "Directional ablation (Arditi et al. 2024): project out the refusal direction"
    neutral_strength = 0.0
    default_strengths = (1.0, -1.0)
    strength_domain = (-10.0, 10.0)
    artifact_tensors = {"direction": TensorSpec("float", ("d_model",))}

    @dataclass
    class Config:
        layer: int | None = None
        """Layer whose mean difference defines r (default floor(0.6 * n_layers))."""
        scope: str = "all"
        """Positions steered: "all" or "generation" (the answer's tokens only)."""

        def __post_init__(self) -> None:
            check_scope(self.scope)

    def direction_layer(self, n_layers: int) -> int:
        layer = (
            self.config.layer if self.config.layer is not None else default_steering_layer(n_layers)
        )
        if not 0 <= layer < n_layers:
            raise SteerbenchError(f"layer must be in 0..{n_layers - 1}, got {layer}")
        return layer

    def check_model(self, adapter) -> None:
        self.direction_layer(adapter.n_layers)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        pos = ctx.activations(positive).resid_post
        neg = ctx.activations(negative).resid_post
        layer = self.direction_layer(pos.shape[1])
        difference = pos[:, layer].mean(0) - neg[:, layer].mean(0)
        direction = difference / difference.norm()
        summary = {"layer": layer, "difference_norm": round(float(difference.norm()), 3)}
        return self.make_artifact(
            ctx, positive, negative, {"direction": direction}, layer=layer, summary=summary
        )

    def apply(self, model, artifact: Artifact, strength: float) -> AbstractContextManager[None]:
        return project_out(model, artifact.tensors["direction"], strength, self.config.scope)
