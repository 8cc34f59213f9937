"""Mean-AcT: linear activation transport of MLP neurons (Rodriguez et al. 2025, "Controlling
Language and Diffusion Models by Transporting Activations", ICLR 2025; Linear-AcT).

Fit: for every MLP neuron (the input of ``down_proj`` at the last token, the activations CNA
reads) the mean and standard deviation (population, ``correction=0``) of the positive and of
the negative prompts' activations. Per neuron, the affine map that carries the negative
distribution onto the positive one is

    T(a) = mu_p + (sd_p / sd_n) (a - mu_n)

the optimal-transport map between two 1-D Gaussians (the paper fits the same per-neuron affine
form by least squares on matched quantiles; with moments it is closed-form and carries the
negative prompts exactly onto the positive prompts' mean and spread). A neuron with
``sd_n <= min_std`` (constant on the negatives) is only shifted: ``T(a) = a + mu_p - mu_n``.

Steering with strength s interpolates, as the paper's lambda: a' = (1 - s) a + s T(a).
s = 0 is unchanged, s = 1 transports the negative statistics to the positive ones (adds the
behaviour of the positive prompts, e.g. refusal for harmful-vs-benign discovery), s = -1
transports as far the other way (removes it); domain [-2, 2], defaults 1 and -1.

Where: by default the neurons CNA ranks into its circuit (``layers: all, fraction: 0.001``:
the top 0.1 % of all MLP neurons by |mu_p - mu_n|, before CNA's global-neuron filter), so
the two differ only in the intervention; ``layers`` chooses others ("all", indices, or None
for every neuron of the last ~10 % of layers, ``max(1, round(0.1 L))``), ``top_k`` /
``fraction`` how many of their neurons (``fraction: null``: all of them).

Closest existing method: CNA with ``intervention: mean`` (a -> mu_n + m (a - mu_n)) scales a
sparse circuit around the negative mean by one shared factor; Mean-AcT moves every chosen
neuron to the positive prompts' mean and rescales it by its own sd_p / sd_n, so the strength
is an interpolation between the two distributions rather than a gain.

Implementation: a' = alpha a + beta per neuron with alpha = 1 - s + s sd_p / sd_n and
beta = s (mu_p - (sd_p / sd_n) mu_n), folded into ``down_proj``: its columns are scaled by
alpha and ``W beta`` (float32, then the weight dtype) is added to its bias, a new bias
Parameter when it has none. On exit the saved columns are copied back and the original bias
(or its absence) is put back, bit for bit. The fold is on ``down_proj``'s input, so it is
exact on every architecture, Gemma's post-MLP norm included.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from steerbench.errors import SteerbenchError
from steerbench.interventions import shifted_biases
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod, TensorSpec
from steerbench.methods.cna import resolve_k, select_top_k
from steerbench.model.adapter import ModelAdapter

DEFAULT_LAYER_SHARE = 0.1
"""The default layers: the last ``max(1, round(0.1 * n_layers))`` layers."""

STATISTICS = ("mean_positive", "std_positive", "mean_negative", "std_negative")


def default_transport_layers(n_layers: int) -> list[int]:
    """The last ~10 % of the layers, at least one: a late block of the network."""
    count = max(1, round(DEFAULT_LAYER_SHARE * n_layers))
    return list(range(n_layers - count, n_layers))


def neuron_statistics(positive: torch.Tensor, negative: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-neuron mean and population standard deviation ``[L, d]`` of activations
    ``[n, L, d]`` of each prompt set (population std: defined for a single prompt too)."""
    positive, negative = positive.float(), negative.float()
    return {
        "mean_positive": positive.mean(dim=0),
        "std_positive": positive.std(dim=0, correction=0),
        "mean_negative": negative.mean(dim=0),
        "std_negative": negative.std(dim=0, correction=0),
    }


def transport_coefficients(
    stats: dict[str, torch.Tensor], strength: float, min_std: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) with (1 - s) a + s T(a) = alpha a + beta, elementwise over ``stats``'
    shape; a neuron whose negative std is at most ``min_std`` gets the scale ratio 1."""
    sd_n = stats["std_negative"].float()
    ratio = torch.where(
        sd_n > min_std, stats["std_positive"].float() / sd_n.clamp_min(min_std), 1.0
    )
    alpha = 1.0 - strength + strength * ratio
    beta = strength * (stats["mean_positive"].float() - ratio * stats["mean_negative"].float())
    return alpha, beta


@contextmanager
def affine_mlp_neurons(
    model: nn.Module,
    layers: torch.Tensor,
    neurons: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
) -> Iterator[None]:
    """Inside the block, MLP neuron activation a of each (layer, neuron) pair i becomes
    ``alpha[i] a + beta[i]``: ``down_proj``'s column is scaled by alpha and W beta is added
    to its bias. Columns and bias are restored exactly on exit, also on an exception."""
    adapter = ModelAdapter.from_model(model)
    saved_columns: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    shifts: dict[nn.Linear, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for layer in torch.unique(layers).tolist():
                proj = adapter.down_proj(layer)
                weight = proj.weight
                chosen = layers == layer
                columns = neurons[chosen].to(weight.device)
                original = weight[:, columns].clone()
                saved_columns.append((weight, columns, original))
                scale = alpha[chosen].to(device=weight.device, dtype=torch.float32)
                offset = beta[chosen].to(device=weight.device, dtype=torch.float32)
                shifts[proj] = original.float() @ offset
                weight[:, columns] = (original.float() * scale).to(weight.dtype)
        with shifted_biases(shifts):
            yield
    finally:
        with torch.no_grad():
            for weight, columns, original in reversed(saved_columns):
                weight[:, columns] = original


@METHODS.register("mean-act")
class MeanAcT(SteeringMethod):
    """Transport MLP neurons' activations from the negative to the positive statistics."""

    description = (
        "Linear activation transport (Rodriguez et al. 2025): per MLP neuron, "
        "a -> (1 - s) a + s (mu_p + sd_p / sd_n (a - mu_n))"
    )
    neutral_strength = 0.0
    default_strengths = (1.0, -1.0)
    strength_domain = (-2.0, 2.0)
    artifact_tensors = {
        "layers": TensorSpec("index", ("k",), "n_layers"),
        "neurons": TensorSpec("index", ("k",), "d_mlp"),
        **{name: TensorSpec("float", ("n_layers", "d_mlp")) for name in STATISTICS},
    }

    @dataclass
    class Config:
        layers: list[int] | str | None = "all"
        """Layer indices, "all" (default: CNA's ranking over every layer), or None for the
        last max(1, round(0.1 L)) layers."""
        top_k: int | None = None
        """Transport only the k neurons of those layers with the largest |mu_p - mu_n|."""
        fraction: float | None = 0.001
        """As ``top_k``, k a fraction of all MLP neurons (CNA's convention and default,
        0.1 %); None: all neurons of the chosen layers (unless ``top_k``)."""
        min_std: float = 1e-6
        """Negative std at or below which a neuron is only mean-shifted (ratio 1)."""

        def __post_init__(self) -> None:
            if not self.min_std > 0:
                raise ValueError(f"min_std must be a positive number, got {self.min_std!r}")

    def transport_layers(self, n_layers: int) -> list[int]:
        chosen = self.config.layers
        if chosen is None:
            return default_transport_layers(n_layers)
        if chosen == "all":
            return list(range(n_layers))
        if (
            isinstance(chosen, str)
            or not chosen
            or not all(isinstance(x, int) and 0 <= x < n_layers for x in chosen)
        ):
            raise SteerbenchError(
                f"{self.name} layers must be 'all' or indices in [0, {n_layers - 1}], "
                f"got {chosen!r}"
            )
        return sorted(set(chosen))

    def circuit_size(self, n_layers: int, d_mlp: int) -> int | None:
        """How many neurons to keep (None: all of the chosen layers)."""
        cfg = self.config
        if cfg.top_k is None and cfg.fraction is None:
            return None
        k = resolve_k(n_layers * d_mlp, cfg.top_k, cfg.fraction or 0.0)
        available = len(self.transport_layers(n_layers)) * d_mlp
        if k > available:
            raise SteerbenchError(
                f"{self.name} asks for {k} neurons but its layers hold only {available}; "
                "choose fewer neurons or more layers"
            )
        return k

    def check_model(self, adapter) -> None:
        self.transport_layers(adapter.n_layers)
        self.circuit_size(adapter.n_layers, adapter.d_mlp)

    def select(self, stats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(layers, neurons) to transport: every neuron of the chosen layers, or the top k by
        |mu_p - mu_n| among them (best first)."""
        n_layers, d_mlp = stats["mean_positive"].shape
        layers = self.transport_layers(n_layers)
        k = self.circuit_size(n_layers, d_mlp)
        if k is None:
            chosen = torch.tensor(layers, dtype=torch.long)
            return chosen.repeat_interleave(d_mlp), torch.arange(d_mlp).repeat(len(layers))
        delta = (stats["mean_positive"] - stats["mean_negative"]).abs()
        excluded = sorted(set(range(n_layers)) - set(layers))
        return select_top_k(delta, k, excluded)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        stats = neuron_statistics(
            ctx.activations(positive).mlp_in, ctx.activations(negative).mlp_in
        )
        layers, neurons = self.select(stats)
        n_layers, d_mlp = stats["mean_positive"].shape
        sd_n = stats["std_negative"][layers, neurons]
        ratio = stats["std_positive"][layers, neurons] / sd_n.clamp_min(self.config.min_std)
        per_layer = Counter(layers.tolist())
        summary = {
            "neurons": len(layers),
            "share_of_mlp_neurons": f"{len(layers) / (n_layers * d_mlp):.4%}",
            "neurons_per_layer": {str(layer): per_layer[layer] for layer in sorted(per_layer)},
            "median_std_ratio": round(float(ratio.median()), 4) if len(ratio) else math.nan,
            "mean_shift_only": int((sd_n <= self.config.min_std).sum()),
        }
        tensors = {"layers": layers, "neurons": neurons, **stats}
        return self.make_artifact(ctx, positive, negative, tensors, summary=summary)

    def apply(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        tensors = artifact.tensors
        layers, neurons = tensors["layers"].long(), tensors["neurons"].long()
        if any(bool((tensors[name] < 0).any()) for name in ("std_positive", "std_negative")):
            raise SteerbenchError(
                f"{self.name} artifact holds negative standard deviations; fit it again "
                "with `steerbench discover`"
            )
        chosen = {name: tensors[name][layers, neurons] for name in STATISTICS}
        alpha, beta = transport_coefficients(chosen, strength, self.config.min_std)
        return affine_mlp_neurons(model, layers, neurons, alpha, beta)
