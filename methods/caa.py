"""CAA: Contrastive Activation Addition (Rimsky et al. 2024).

The steering vector of layer l is the raw difference of mean residual-stream activations
(after layer l, last token) between positive and negative prompts: no normalisation, so
strength 1 shifts the residual stream by exactly the average positive-minus-negative
difference, and strength -1 removes it. With ``scope: all`` it is added at every position
of the chosen layer(s) as a bias on their ``down_proj`` (zero per-token cost);
``scope: generation`` adds it to the answer's tokens only.

Default layer rule: the single layer ``floor(0.6 * n_layers)``, middle-to-late, where
behavioural directions are usually most steerable (Rimsky et al.; Arditi et al.).
"""

from __future__ import annotations

import torch

from steerbench.method import METHODS
from steerbench.vector_steering import ResidualVectorMethod, mean_difference


@METHODS.register("caa")
class CAA(ResidualVectorMethod):
    """Add strength x (mean positive - mean negative) residual activation at a layer."""

    description = "Contrastive Activation Addition: add a mean-difference residual vector"
    default_strengths = (-4.0, -2.0, -1.0, 1.0)

    def vectors(self, positive: torch.Tensor, negative: torch.Tensor, layers: list[int]):
        return mean_difference(positive, negative), {}
