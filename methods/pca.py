"""PCA steering (the RepE / repeng recipe): the first principal component of paired
activation differences, added like CAA.

Positive and negative prompts are paired in order (JBB's harmful and benign behaviours are
topic-matched pairs); the differences' first principal component (centred, via torch's
SVD) is the direction, sign-aligned with the mean difference and rescaled to the mean
difference's projection on it, so strengths compare with CAA's. Where CAA averages the
differences, PCA keeps the axis along which they vary most.
"""

from __future__ import annotations

import torch

from steerbench.errors import SteerbenchError
from steerbench.method import METHODS
from steerbench.vector_steering import ResidualVectorMethod, scaled_like_mean_difference


@METHODS.register("pca")
class PCA(ResidualVectorMethod):
    """Add strength x (first principal component of paired differences) at a layer."""

    description = "first principal component of paired activation differences (RepE)"
    default_strengths = (-4.0, -1.0, 1.0)

    def vectors(self, positive: torch.Tensor, negative: torch.Tensor, layers: list[int]):
        pairs = min(len(positive), len(negative))
        if pairs < 2:
            raise SteerbenchError("pca needs at least two positive/negative prompt pairs")
        differences = positive[:pairs] - negative[:pairs]  # [pairs, L, d]
        directions = torch.zeros(positive.shape[1:], dtype=torch.float32)
        explained = {}
        for layer in layers:
            centred = differences[:, layer] - differences[:, layer].mean(dim=0)
            _, singular, right = torch.linalg.svd(centred.double(), full_matrices=False)
            component = right[0].float()
            mean = differences[:, layer].mean(dim=0)
            directions[layer] = component if float(component @ mean) >= 0 else -component
            explained[str(layer)] = round(float(singular[0] ** 2 / (singular**2).sum()), 4)
        vectors = scaled_like_mean_difference(directions, positive, negative)
        return vectors, {"pairs": pairs, "summary": {"explained_variance": explained}}
