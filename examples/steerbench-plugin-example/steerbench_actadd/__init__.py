"""ActAdd (Turner et al. 2023, "Steering Language Models With Activation Engineering") as a
steerbench plugin.

Unlike CAA, which averages over many prompt pairs, ActAdd steers with the residual
difference of a single contrast pair (here: the first positive and first negative prompt),
added at one layer, scaled by the strength. Like steerbench's own residual methods it
takes ``scope``: every position ("all") or only the answer's tokens ("generation").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steerbench.interventions import add_to_residual, check_scope
from steerbench.method import Artifact, FitContext, SteeringMethod, TensorSpec


class ActAdd(SteeringMethod):
    """Add strength x (resid(first positive) - resid(first negative)) at one layer."""

    description = "ActAdd: residual difference of one prompt pair, added at a layer (plugin)"
    neutral_strength = 0.0
    default_strengths = (-2.0, 2.0)
    artifact_tensors = {"vector": TensorSpec("float", ("d_model",))}

    @dataclass
    class Config:
        layer: int | None = None
        """Layer to steer (default: the middle layer)."""
        scope: str = "all"
        """Positions steered: "all" or "generation" (the answer's tokens only)."""

        def __post_init__(self) -> None:
            check_scope(self.scope)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        pos = ctx.activations(positive[:1]).resid_post[0]  # [n_layers, d_model]
        neg = ctx.activations(negative[:1]).resid_post[0]
        layer = self.config.layer if self.config.layer is not None else pos.shape[0] // 2
        vector = pos[layer] - neg[layer]
        summary = {
            "layer": layer,
            "pair": [positive[0], negative[0]],
            "norm": round(float(vector.norm()), 3),
        }
        return self.make_artifact(
            ctx, positive[:1], negative[:1], {"vector": vector}, layer=layer, summary=summary
        )

    def apply(self, model, artifact: Artifact, strength: float):
        # steer() has checked the artifact (tensors below), the model and the strength,
        # and handles the neutral strength; only the intervention is left
        return add_to_residual(
            model,
            {artifact.metadata["layer"]: strength * artifact.tensors["vector"]},
            self.config.scope,
        )
