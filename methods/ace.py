"""ACE: affine concept editing (Marshall, Scherlis & Belrose 2024, "Refusal in LLMs is an
Affine Function", arXiv 2411.09003).

Direction: r, the normalised difference of mean residual activations (last token) between
positive and negative prompts at one layer, fitted exactly as ``directional-ablation`` fits
it (same code, same layer rule ``floor(0.6 * n_layers)``, ``layer`` overrides). Reference:
the negative prompts' mean activation mu_l at every edited layer l, kept as its projection
``reference[l] = mu_l.r``; ``difference[l] = (mean_pos_l - mean_neg_l).r`` is the unit of
alpha (at the direction layer it is ||mean_pos - mean_neg||).

ACE sets the component along r to the reference's plus alpha times the difference:

    x' = x - (x.r) r + t_l r,     t_l = reference[l] + alpha * difference[l]

alpha = 0 ablates to the reference (the negative prompts' mean), alpha = 1 puts the component
at the positive prompts' mean. No alpha is the identity, and a benchmark needs one (the
unsteered point of every sweep), so the strength s in [-1, 1] is a mix from the unsteered
component to ACE's target, as Mean-AcT's lambda:

    x' = x + |s| (t_l - x.r) r,   alpha = alpha_remove (0) for s < 0, alpha_add (1) for s > 0

s = 0 is unchanged, s = -1 is ACE at alpha = 0 (removes the behaviour of the positive
prompts, e.g. refusal), s = +1 is ACE at alpha = 1 (adds it, also on prompts that never
showed it); in between, the component moves |s| of the way. Comparable with CAA: on the
prompts each side acts on (positive prompts for s < 0, negative ones for s > 0) the stream
moves along r by about |s| x the mean difference's projection, as CAA's does at strength s.
``alpha_add`` / ``alpha_remove`` choose other targets (e.g. 2, or -1: beyond the means).

Closest existing method, ``directional-ablation``: x' = x - s (x.r) r ablates to 0, the linear
view, which puts every activation's component at the origin, a point with no meaning that can
lie far from anything the model saw (Marshall et al. report incoherent text from it on some
models). ACE is the affine view: it ablates to the reference mean, where the negative prompts'
activations actually lie, and it adds the direction (``caa``'s move) from there: applied
to one activation, ACE at s = -1 and directional ablation at s = 1 differ by reference[l] r.

Where: at the output of every decoder layer (``layers: all``, the default; the published
code edits layer outputs, each with that layer's reference), or of chosen layers
(``direction``: only the direction layer; or a list of indices). The edit sets the component
of the residual stream itself, the sum of every earlier write, where the reference was
measured, so a forward hook on the layer output makes the maths exact there and leaves the
orthogonal complement of that output untouched; folding it into the writes' weights would
also have to set the embedding's component, where no reference is measured. Cost: one dot
product and one add per edited layer and token. ``scope: generation`` edits decoding steps
only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from steerbench.errors import SteerbenchError
from steerbench.interventions import decoding_passes
from steerbench.method import METHODS, Artifact, FitContext, TensorSpec
from steerbench.methods.directional_ablation import DirectionalAblation
from steerbench.model.adapter import ModelAdapter


@contextmanager
def set_component(
    model: torch.nn.Module,
    direction: torch.Tensor,
    targets: dict[int, float],
    mix: float,
    scope: str = "all",
) -> Iterator[None]:
    """At the output of each layer l of ``targets``: x <- x + mix (targets[l] - x.r) r, so the
    component along the unit vector r moves ``mix`` of the way to ``targets[l]`` (mix = 1 sets
    it) and the orthogonal complement stays; hooks removed on exit, also on exceptions."""
    adapter = ModelAdapter.from_model(model)
    param = next(model.parameters())
    r = direction.to(device=param.device, dtype=param.dtype)
    handles = []
    with decoding_passes(adapter) if scope == "generation" else nullcontext() as decoding:
        for layer, target in targets.items():

            def hook(_module, _args, output, target=target):
                if decoding is not None and not decoding[0]:
                    return None
                hidden = output[0] if isinstance(output, tuple) else output
                edited = hidden + (mix * (target - hidden @ r)).unsqueeze(-1) * r
                return (edited, *output[1:]) if isinstance(output, tuple) else edited

            handles.append(adapter.layers[layer].register_forward_hook(hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


@METHODS.register("ace")
class ACE(DirectionalAblation):
    """Set the component along the refusal direction to the reference mean's (plus alpha x
    the mean difference), mixed in by |strength|."""

    description = (
        "Affine concept editing (Marshall et al. 2024): the component along r moved to the "
        "negative mean's (s < 0) or the positive mean's (s > 0)"
    )
    neutral_strength = 0.0
    default_strengths = (-1.0, 1.0)
    strength_domain = (-1.0, 1.0)
    artifact_tensors = {
        "direction": TensorSpec("float", ("d_model",)),
        "reference": TensorSpec("float", ("n_layers",)),
        "difference": TensorSpec("float", ("n_layers",)),
    }

    @dataclass
    class Config(DirectionalAblation.Config):
        layers: list[int] | str = "all"
        """Layers whose output is edited: "all", "direction" (the direction layer only), or
        indices."""
        alpha_remove: float = 0.0
        """ACE's alpha for s < 0, in units of difference[l] above the reference (0: the
        negative prompts' mean, ACE's ablation)."""
        alpha_add: float = 1.0
        """ACE's alpha for s > 0 (1: the positive prompts' mean)."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if isinstance(self.layers, str) and self.layers not in ("all", "direction"):
                raise SteerbenchError(
                    f"layers must be 'all', 'direction' or layer indices, got {self.layers!r}"
                )

    def edit_layers(self, n_layers: int) -> list[int]:
        chosen = self.config.layers
        if chosen == "all":
            return list(range(n_layers))
        if chosen == "direction":
            return [self.direction_layer(n_layers)]
        bad = [layer for layer in chosen if not 0 <= layer < n_layers]
        if bad or not chosen:
            raise SteerbenchError(
                f"ace layers must be 'all', 'direction' or indices in [0, {n_layers - 1}], "
                f"got {chosen!r}"
            )
        return sorted(set(chosen))

    def check_model(self, adapter) -> None:
        super().check_model(adapter)
        self.edit_layers(adapter.n_layers)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        """Directional ablation's direction, plus every layer's reference and difference
        projected on it (from the same cached activations: no further forward pass)."""
        artifact = super().fit(ctx, positive, negative)
        r = artifact.tensors["direction"]
        mean_pos = ctx.activations(positive).resid_post.mean(dim=0)
        mean_neg = ctx.activations(negative).resid_post.mean(dim=0)
        reference = mean_neg @ r
        difference = mean_pos @ r - reference
        layers = self.edit_layers(mean_neg.shape[0])
        artifact.tensors.update(reference=reference, difference=difference)
        artifact.metadata["edit_layers"] = layers
        artifact.metadata["summary"].update(
            edit_layers=layers if len(layers) < 8 else f"{len(layers)} layers",
            reference_at_direction_layer=round(float(reference[artifact.metadata["layer"]]), 3),
        )
        return artifact

    def apply(self, model, artifact: Artifact, strength: float) -> AbstractContextManager[None]:
        alpha = self.config.alpha_add if strength > 0 else self.config.alpha_remove
        targets = artifact.tensors["reference"] + alpha * artifact.tensors["difference"]
        layers = self.edit_layers(targets.shape[0])
        return set_component(
            model,
            artifact.tensors["direction"],
            {layer: float(targets[layer]) for layer in layers},
            abs(strength),
            self.config.scope,
        )
