"""The shared half of every method that adds a vector to the residual stream (CAA, the
probe and PCA directions): the layer rule, the token scope and the intervention.

A subclass only says how to compute its vectors from the discovery activations
(``vectors``); fitting, the artifact, the checks and steering are the same for all, so the
methods differ exactly where their papers do.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from steerbench.errors import SteerbenchError
from steerbench.interventions import add_to_residual, check_scope
from steerbench.method import Artifact, FitContext, SteeringMethod, TensorSpec
from steerbench.model.adapter import default_steering_layer


class ResidualVectorMethod(SteeringMethod):
    """Add ``strength x vectors[layer]`` to the residual stream after the chosen layer(s)."""

    neutral_strength = 0.0
    artifact_tensors = {"vectors": TensorSpec("float", ("n_layers", "d_model"))}

    @dataclass
    class Config:
        layers: list[int] | str | None = None
        """Layer indices, "all", or None for the default layer rule (floor(0.6 L))."""
        scope: str = "all"
        """Positions steered: "all" (prompt and answer) or "generation" (answer only)."""

        def __post_init__(self) -> None:
            check_scope(self.scope)

    @abstractmethod
    def vectors(
        self, positive: torch.Tensor, negative: torch.Tensor, layers: list[int]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """From last-token residual activations ``[n, n_layers, d_model]`` of the positive
        and negative prompts: the vectors ``[n_layers, d_model]`` (only ``layers`` are used)
        and extra metadata for the artifact."""

    def steering_layers(self, n_layers: int) -> list[int]:
        chosen = self.config.layers
        if chosen is None:
            return [default_steering_layer(n_layers)]
        if chosen == "all":
            return list(range(n_layers))
        if isinstance(chosen, str) or not all(0 <= int(x) < n_layers for x in chosen):
            raise SteerbenchError(
                f"{self.name} layers must be 'all' or indices in [0, {n_layers - 1}], "
                f"got {chosen!r}"
            )
        return [int(x) for x in chosen]

    def check_model(self, adapter) -> None:
        self.steering_layers(adapter.n_layers)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        pos = ctx.activations(positive).resid_post.float()
        neg = ctx.activations(negative).resid_post.float()
        layers = self.steering_layers(pos.shape[1])
        vectors, extra = self.vectors(pos, neg, layers)
        summary = {
            "layers": layers,
            "vector_norms": {
                str(layer): round(float(vectors[layer].norm()), 3) for layer in layers
            },
            **extra.pop("summary", {}),
        }
        return self.make_artifact(
            ctx, positive, negative, {"vectors": vectors}, layers=layers, summary=summary, **extra
        )

    def apply(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        vectors = artifact.tensors["vectors"]
        layers = self.steering_layers(vectors.shape[0])
        return add_to_residual(
            model, {layer: strength * vectors[layer] for layer in layers}, self.config.scope
        )


def mean_difference(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean positive minus mean negative activation, per layer: ``[n_layers, d_model]``."""
    return positive.mean(dim=0) - negative.mean(dim=0)


def scaled_like_mean_difference(
    directions: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor
) -> torch.Tensor:
    """Unit directions ``[n_layers, d_model]`` rescaled to the length of the mean
    difference's projection on them (sign included), so that strength s moves the residual
    stream as far along the direction as CAA at strength s moves it there: strengths of
    the vector methods are comparable. Layers whose direction is zero stay zero."""
    diff = mean_difference(positive, negative)
    unit = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit * (unit * diff).sum(dim=-1, keepdim=True)
