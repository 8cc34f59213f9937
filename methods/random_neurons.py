"""Random-neuron control: a circuit of the same size and layer profile as CNA's, drawn at random.

Every CNA result should be read against this control: if scaling random neurons of the
same layers moves refusal as much, the CNA circuit is not special.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod
from steerbench.methods.cna import CNA


def draw_matching_neurons(
    layers: torch.Tensor, d_mlp: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each layer, as many distinct neurons, uniformly at random, as ``layers`` holds."""
    generator = torch.Generator().manual_seed(seed)
    out_layers, out_neurons = [], []
    for layer, count in zip(*torch.unique(layers, return_counts=True)):
        picks = torch.randperm(d_mlp, generator=generator)[: int(count)]
        out_layers.append(torch.full_like(picks, int(layer)))
        out_neurons.append(picks)
    if not out_layers:
        return layers.clone(), layers.clone()
    return torch.cat(out_layers), torch.cat(out_neurons)


@METHODS.register("random-neurons")
class RandomNeurons(CNA):
    """Scale random MLP neurons matched to the CNA circuit's size and layers.

    Steering is CNA's (same ``intervention`` options), so the two differ only in which
    neurons are chosen.
    """

    is_control = True
    description = "Control: as many random neurons as CNA's circuit, from the same layers"

    @dataclass
    class Config(CNA.Config):
        seed: int = 0

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        cna_settings = {k: v for k, v in self.hyperparameters().items() if k != "seed"}
        circuit = CNA(**cna_settings).fit(ctx, positive, negative)
        d_mlp = circuit.tensors["mean_positive"].shape[1]
        layers, neurons = draw_matching_neurons(circuit.tensors["layers"], d_mlp, self.config.seed)
        overlap = len(
            set(zip(layers.tolist(), neurons.tolist()))
            & set(zip(circuit.tensors["layers"].tolist(), circuit.tensors["neurons"].tolist()))
        )
        summary = {
            "neurons": len(layers),
            "overlap_with_cna_circuit": overlap,
            "seed": self.config.seed,
        }
        tensors = {
            "layers": layers,
            "neurons": neurons,
            "mean_negative": circuit.tensors["mean_negative"],
        }
        return self.make_artifact(ctx, positive, negative, tensors, summary=summary)

    def summary(self, artifact: Artifact) -> list[str]:
        return SteeringMethod.summary(self, artifact)
