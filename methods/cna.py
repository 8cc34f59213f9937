"""CNA: Contrastive Neuron Attribution (arXiv 2605.12290).

1. Record every layer's MLP neuron activations (the input of ``down_proj``) at the last
   token of chat-formatted positive and negative prompts.
2. delta = mean(positive) - mean(negative) for every (layer, neuron).
3. Keep the top k of all (layer, neuron) pairs by |delta| (default k = 0.1 % of all MLP
   neurons), skipping excluded layers.
4. Drop "global" neurons: those in the top 0.1 % |activation| of their layer on >= 80 % of
   a diverse neutral prompt set (they are always on, not specific to the contrast).
5. Steer by multiplying the circuit's activations by m (0 ablates, 1 is unchanged, > 1
   amplifies), folded into the ``down_proj`` columns so it costs nothing per token.

Variants (options; the defaults are the paper's): ``selection`` ranks neurons by |delta|,
by signed delta, or by |delta| over the pooled standard deviation; ``intervention`` scales
activations or mean-ablates them (towards their mean on the negative prompts); k is a count
(``top_k``) or a fraction of all MLP neurons (``fraction``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch

from steerbench.errors import SteerbenchError
from steerbench.interventions import scale_mlp_neurons
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod, TensorSpec
from steerbench.run.prompt_sets import load_prompts


def contrastive_delta(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """[n_pos, L, d] and [n_neg, L, d] activations -> [L, d] difference of means."""
    return positive.mean(dim=0) - negative.mean(dim=0)


SELECTIONS = ("abs", "signed", "standardized")
INTERVENTIONS = ("scale", "mean")


def selection_scores(positive: torch.Tensor, negative: torch.Tensor, how: str) -> torch.Tensor:
    """[L, d] ranking scores: |delta| (paper), delta (signed), or |delta| / pooled std."""
    delta = contrastive_delta(positive, negative)
    if how == "abs":
        return delta.abs()
    if how == "signed":
        return delta
    n_pos, n_neg = positive.shape[0], negative.shape[0]
    pooled = ((n_pos - 1) * positive.var(dim=0) + (n_neg - 1) * negative.var(dim=0)) / max(
        1, n_pos + n_neg - 2
    )
    return delta.abs() / (pooled.sqrt() + 1e-6)


def resolve_k(total: int, top_k: int | None, fraction: float) -> int:
    """k as a count, or as a fraction of all MLP neurons (at least one neuron)."""
    if top_k is not None:
        if not 1 <= top_k <= total:
            raise SteerbenchError(f"top_k must be in [1, {total}], got {top_k}")
        return top_k
    if not 0 < fraction <= 1:
        raise SteerbenchError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, round(total * fraction))


def select_top_k(
    scores: torch.Tensor, k: int, exclude_layers: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """(layers, neurons) of the k largest ``scores`` [L, d] over all layers, best first."""
    scores = scores.clone()
    n_layers, width = scores.shape
    for layer in exclude_layers:
        if not 0 <= layer < n_layers:
            raise SteerbenchError(f"excluded layer {layer} is outside [0, {n_layers - 1}]")
        scores[layer] = -math.inf
    flat = torch.topk(scores.flatten(), k).indices
    return flat // width, flat % width


def global_neuron_mask(
    activations: torch.Tensor, top_fraction: float = 0.001, min_share: float = 0.8
) -> torch.Tensor:
    """[L, d] mask of neurons in their layer's top ``top_fraction`` |activation| on at
    least ``min_share`` of the prompts (``activations``: [n_prompts, L, d])."""
    width = activations.shape[-1]
    q = max(1, math.ceil(width * top_fraction))
    top = torch.topk(activations.abs(), q, dim=-1).indices  # [n, L, q]
    in_top = torch.zeros(activations.shape, dtype=torch.bool).scatter_(-1, top, True)
    return in_top.float().mean(dim=0) >= min_share


@METHODS.register("cna")
class CNA(SteeringMethod):
    """Scale a sparse circuit of MLP neurons found by contrasting mean activations."""

    description = "Contrastive Neuron Attribution: scale the top-|delta| MLP neurons by m"
    neutral_strength = 1.0
    default_strengths = (0.0, 0.5, 2.0)
    strength_domain = (0.0, 100.0)
    artifact_tensors = {
        "layers": TensorSpec("index", ("k",), "n_layers"),
        "neurons": TensorSpec("index", ("k",), "d_mlp"),
        "mean_negative": TensorSpec("float", ("n_layers", "d_mlp")),
    }

    @dataclass
    class Config:
        top_k: int | None = None
        """Circuit size as a count (overrides ``fraction``)."""
        fraction: float = 0.001
        """Circuit size as a fraction of all MLP neurons (paper: 0.1 %)."""
        neutral_prompts: str | None = "neutral"
        """Prompt set for the global-neuron filter; None disables the filter."""
        global_top_fraction: float = 0.001
        global_min_share: float = 0.8
        exclude_layers: list[int] = field(default_factory=list)
        selection: str = "abs"
        """Neuron ranking: "abs" |delta| (paper), "signed" (only neurons more active on
        positive prompts) or "standardized" (|delta| / pooled standard deviation)."""
        intervention: str = "scale"
        """"scale" multiplies activations by m (paper); "mean" replaces each activation a
        with mu + m (a - mu), mu its mean over the negative prompts (mean ablation at 0)."""

        def __post_init__(self) -> None:
            if self.selection not in SELECTIONS:
                raise ValueError(
                    f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}"
                )
            if self.intervention not in INTERVENTIONS:
                raise ValueError(
                    f"intervention must be one of {', '.join(INTERVENTIONS)}, "
                    f"got {self.intervention!r}"
                )

    def check_model(self, adapter) -> None:
        bad = [layer for layer in self.config.exclude_layers if not 0 <= layer < adapter.n_layers]
        if bad:
            raise SteerbenchError(
                f"exclude_layers {bad} are outside the model's layers 0..{adapter.n_layers - 1}"
            )

    def circuit_scores(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Per-neuron ranking score (higher = more in the circuit)."""
        return selection_scores(positive, negative, self.config.selection)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        cfg = self.config
        pos = ctx.activations(positive).mlp_in
        neg = ctx.activations(negative).mlp_in
        n_layers, d_mlp = pos.shape[1:]
        mean_pos, mean_neg = pos.mean(dim=0), neg.mean(dim=0)
        delta = mean_pos - mean_neg
        k = resolve_k(n_layers * d_mlp, cfg.top_k, cfg.fraction)
        layers, neurons = select_top_k(self.circuit_scores(pos, neg), k, cfg.exclude_layers)

        keep = torch.ones_like(layers, dtype=torch.bool)
        if cfg.neutral_prompts:
            neutral = [r.text for r in load_prompts(cfg.neutral_prompts)]
            mask = global_neuron_mask(
                ctx.activations(neutral).mlp_in, cfg.global_top_fraction, cfg.global_min_share
            )
            keep = ~mask[layers, neurons]
        tensors = {
            "layers": layers[keep],
            "neurons": neurons[keep],
            "delta": delta[layers[keep], neurons[keep]],
            "global_layers": layers[~keep],
            "global_neurons": neurons[~keep],
            "global_delta": delta[layers[~keep], neurons[~keep]],
            "mean_positive": mean_pos,
            "mean_negative": mean_neg,
        }
        per_layer = Counter(tensors["layers"].tolist())
        summary = {
            "k": k,
            "circuit_neurons": int(keep.sum()),
            "global_neurons_filtered": int((~keep).sum()),
            "share_of_mlp_neurons": f"{int(keep.sum()) / (n_layers * d_mlp):.4%}",
            "neurons_per_layer": {str(layer): per_layer[layer] for layer in sorted(per_layer)},
        }
        return self.make_artifact(ctx, positive, negative, tensors, summary=summary)

    def summary(self, artifact: Artifact) -> list[str]:
        info = artifact.metadata["summary"]
        lines = [
            f"k = {info['k']} ({info['share_of_mlp_neurons']} of "
            f"{artifact.metadata['n_layers']} x {artifact.metadata['d_mlp']} MLP neurons), "
            f"{info['global_neurons_filtered']} global neurons filtered, "
            f"{info['circuit_neurons']} in the circuit",
            "neurons per layer:",
        ]
        per_layer = info["neurons_per_layer"]
        peak = max(per_layer.values(), default=1)
        for layer, count in per_layer.items():
            lines.append(f"  layer {int(layer):3d} {count:5d} {'#' * max(1, 40 * count // peak)}")
        return lines

    def apply(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        layers, neurons = artifact.tensors["layers"], artifact.tensors["neurons"]
        baseline = None
        if self.config.intervention == "mean":
            baseline = artifact.tensors["mean_negative"][layers, neurons]
        return scale_mlp_neurons(model, layers, neurons, strength, baseline)
