"""Probe steering: the direction of a linear probe that tells positive from negative
prompts, added like CAA.

Per steering layer, an L2-regularised logistic regression (scikit-learn) is fitted on the
standardised last-token residual activations of the positive (label 1) and negative
(label 0) prompts; its weight vector, mapped back to activation space, is the direction.
It is rescaled to the mean difference's projection on it, so strength s moves the residual
stream along the probe direction as far as CAA at strength s does. The artifact records
the probe's cross-validated accuracy: a direction from a probe at chance steers noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerbench.method import METHODS
from steerbench.vector_steering import ResidualVectorMethod, scaled_like_mean_difference


@METHODS.register("probe")
class Probe(ResidualVectorMethod):
    """Add strength x (logistic-regression probe direction) at a layer."""

    description = "logistic-regression probe direction, added like CAA"
    default_strengths = (-4.0, -1.0, 1.0)

    @dataclass
    class Config(ResidualVectorMethod.Config):
        regularisation: float = 1.0
        """Inverse L2 strength ``C`` of the logistic regression."""
        folds: int = 5
        """Cross-validation folds for the reported held-out accuracy."""

    def vectors(self, positive: torch.Tensor, negative: torch.Tensor, layers: list[int]):
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
        directions = torch.zeros(positive.shape[1:], dtype=torch.float32)
        accuracy = {}
        folds = min(self.config.folds, len(positive), len(negative))
        for layer in layers:
            features = torch.cat([positive[:, layer], negative[:, layer]]).double().numpy()
            probe = make_pipeline(
                StandardScaler(), LogisticRegression(C=self.config.regularisation, max_iter=2000)
            )
            if folds >= 2:
                splitter = StratifiedKFold(folds, shuffle=True, random_state=0)
                accuracy[str(layer)] = round(
                    float(cross_val_score(probe, features, labels, cv=splitter).mean()), 4
                )
            probe.fit(features, labels)
            scaler, regression = probe
            # the probe reads (x - mu) / sigma, so its direction in activation space is w / sigma
            weights = regression.coef_[0] / np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
            directions[layer] = torch.from_numpy(weights).float()
        vectors = scaled_like_mean_difference(directions, positive, negative)
        return vectors, {"probe_accuracy": accuracy, "summary": {"cv_accuracy": accuracy}}
