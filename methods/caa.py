"""CAA: Contrastive Activation Addition (Rimsky et al. 2024).

The steering vector of layer l is the raw difference of mean residual-stream activations
(after layer l, last token) between positive and negative prompts: no normalisation, so
strength 1 shifts the residual stream by exactly the average positive-minus-negative
difference, and strength -1 removes it. It is added at every position of the chosen
layer(s), as a bias on their ``down_proj`` (zero per-token cost).

Default layer rule: the single layer ``floor(0.6 * n_layers)``, middle-to-late, where
behavioural directions are usually most steerable (Rimsky et al.; Arditi et al.).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from steerbench.adapter import default_steering_layer
from steerbench.errors import SteerbenchError
from steerbench.interventions import add_to_residual
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod, TensorSpec


@METHODS.register("caa")
class CAA(SteeringMethod):
    """Add strength x (mean positive - mean negative) residual activation at a layer."""

    description = "Contrastive Activation Addition: add a mean-difference residual vector"
    neutral_strength = 0.0
    default_strengths = (-4.0, -2.0, -1.0, 1.0)
    artifact_tensors = {"vectors": TensorSpec("float", ("n_layers", "d_model"))}

    @dataclass
    class Config:
        layers: list[int] | str | None = None
        """Layer indices, "all", or None for the default layer rule."""

    def steering_layers(self, n_layers: int) -> list[int]:
        chosen = self.config.layers
        if chosen is None:
            return [default_steering_layer(n_layers)]
        if chosen == "all":
            return list(range(n_layers))
        if isinstance(chosen, str) or not all(0 <= int(x) < n_layers for x in chosen):
            raise SteerbenchError(
                f"caa layers must be 'all' or indices in [0, {n_layers - 1}], got {chosen!r}"
            )
        return [int(x) for x in chosen]

    def check_model(self, adapter) -> None:
        self.steering_layers(adapter.n_layers)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        pos = ctx.activations(positive).resid_post
        neg = ctx.activations(negative).resid_post
        vectors = pos.mean(dim=0) - neg.mean(dim=0)  # [L, d_model]
        layers = self.steering_layers(vectors.shape[0])
        summary = {
            "layers": layers,
            "vector_norms": {
                str(layer): round(float(vectors[layer].norm()), 3) for layer in layers
            },
        }
        return self.make_artifact(
            ctx, positive, negative, {"vectors": vectors}, layers=layers, summary=summary
        )

    def apply(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        vectors = artifact.tensors["vectors"]
        layers = self.steering_layers(vectors.shape[0])
        return add_to_residual(model, {layer: strength * vectors[layer] for layer in layers})
