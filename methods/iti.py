"""ITI: Inference-Time Intervention (Li et al. 2023, "Inference-Time Intervention: Eliciting
Truthful Answers from a Language Model", arXiv 2306.03341).

1. Record every attention head's output at the last token of the positive and negative
   prompts: the input of each layer's ``o_proj``, split into heads
   (``[n, n_layers, n_heads, head_dim]``).
2. Probe each head with an L2 logistic regression on its standardised outputs, scored by
   seeded stratified k-fold (scikit-learn's ``StratifiedKFold``) cross-validated accuracy;
   the probes of all heads are solved together by a batched Newton solver in torch, the
   same optimum as scikit-learn's ``LogisticRegression(C)`` (the tests check it), because
   a thousand heads x five folds of sequential scikit-learn fits take minutes. Keep the
   ``top_k`` heads of highest accuracy (ties, frequent with few prompts, broken by the
   mass-mean separation ``|mean_pos - mean_neg| / sigma``). ``top_k`` defaults to the
   paper's K = 48, capped at the model's number of heads (a tiny model steers all of them).
3. Per chosen head: the mass-mean direction d (mean positive minus mean negative head
   output, normalised: the paper's best variant) and sigma, the standard deviation of the
   head's activations projected on d over the positive and negative prompts together.
4. Steering at strength s adds ``s * sigma * d`` to each chosen head's output at every
   position. ``o_proj`` is linear, so ``o_proj(x + delta) = o_proj(x) + W_o delta``: the
   shift is folded into ``o_proj``'s bias (one is created where there is none, and the
   original bias, or its absence, is put back exactly on exit), which is exact and costs
   nothing per token. The fold sits before any post-attention norm (Gemma 2/3), so it is
   exact there too.

Strength convention: s is in units of each head's sigma; s > 0 moves the chosen heads
towards the positive prompts, s < 0 away from them, 0 is the unsteered model. The paper
uses alpha ~ 15 on Llama-7B with K = 48; defaults here are -5 and +5.

Closest existing method: CAA (``caa``) adds one mean-difference vector to the residual
stream at one layer; ITI shifts only a sparse set of probe-selected attention heads,
across all layers, each by its own standardised mass-mean direction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from steerbench.errors import SteerbenchError
from steerbench.interventions import shifted_biases
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod, TensorSpec
from steerbench.model.adapter import ModelAdapter
from steerbench.model.chat import encoded_batches

log = logging.getLogger(__name__)


def o_proj(adapter: ModelAdapter, layer: int) -> nn.Linear:
    """The attention output projection of ``layer``, whose input is the heads' outputs."""
    return adapter.block(layer).self_attn.o_proj


def head_geometry(adapter: ModelAdapter) -> tuple[int, int]:
    """(n_heads, head_dim) of the model's attention, from its config and ``o_proj``."""
    model: Any = adapter.model
    config = getattr(model.config, "text_config", None) or model.config
    n_heads = int(getattr(config, "num_attention_heads", 0))
    width = o_proj(adapter, 0).in_features
    if n_heads < 1 or width % n_heads:
        raise SteerbenchError(
            f"o_proj input width {width} does not split into {n_heads} attention heads; "
            "ITI cannot find the heads of this model"
        )
    return n_heads, width // n_heads


@contextmanager
def record_head_outputs(adapter: ModelAdapter, sink: list[list[torch.Tensor]]) -> Iterator[None]:
    """Append each layer's last-position ``o_proj`` input ([batch, n_heads * head_dim]) to
    ``sink[layer]``; prompts are left-padded, so position -1 is the last real token."""

    def keep(layer: int, tensor: torch.Tensor) -> None:
        sink[layer].append(tensor[:, -1, :].float().cpu())

    handles = [
        o_proj(adapter, layer).register_forward_pre_hook(
            lambda _m, args, layer=layer: keep(layer, args[0])
        )
        for layer in range(adapter.n_layers)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture_head_outputs(ctx: FitContext, prompts: Sequence[str]) -> torch.Tensor:
    """Last-token head outputs ``[n, n_layers, n_heads, head_dim]`` (float32), fed through
    the same batching and tokenisation as every other capture."""
    if not prompts:
        raise SteerbenchError("no prompts to capture activations from; check the prompt set")
    adapter = ModelAdapter.from_model(ctx.model)
    n_heads, head_dim = head_geometry(adapter)
    device = next(ctx.model.parameters()).device
    out = torch.empty(len(prompts), adapter.n_layers, n_heads, head_dim)
    batches = encoded_batches(ctx.tokenizer, list(prompts), ctx.fmt, ctx.batch_size, device)
    with torch.inference_mode():
        for batch, encoded in batches:
            sink: list[list[torch.Tensor]] = [[] for _ in range(adapter.n_layers)]
            with record_head_outputs(adapter, sink):
                adapter.backbone(**encoded, use_cache=False)
            stacked = torch.stack([rows[0] for rows in sink], dim=1)
            out[torch.tensor(batch)] = stacked.view(len(batch), adapter.n_layers, n_heads, -1)
    return out


HEADS_PER_SOLVE = 256
"""Probes solved at once (bounds the memory of the batched Hessians)."""


def fit_logistic(
    features: torch.Tensor, labels: torch.Tensor, regularisation: float, steps: int = 50
) -> torch.Tensor:
    """Batched L2 logistic regression by damped Newton: ``features`` [B, n, d], ``labels``
    [n] in {0, 1} -> ``[B, d + 1]`` (weights, then intercept), the minimiser of
    scikit-learn's ``LogisticRegression(C=regularisation)`` objective,
    ``0.5 |w|^2 + C sum logloss`` with the intercept unpenalised, for every problem at once."""
    batch, n, d = features.shape
    x = torch.cat([features, features.new_ones(batch, n, 1)], dim=-1)
    penalty = features.new_full((d + 1,), 1.0 / regularisation)
    penalty[-1] = 0.0
    ridge = torch.diag(penalty + 1e-10)
    w = features.new_zeros(batch, d + 1)
    trials = 0.5 ** torch.arange(12, dtype=features.dtype, device=features.device)

    def loss(weights: torch.Tensor) -> torch.Tensor:  # [..., B, d + 1] -> [..., B]
        z = torch.einsum("bnp,...bp->...bn", x, weights)
        logloss = (nn.functional.softplus(z) - labels * z).sum(-1)
        return logloss + 0.5 * (penalty * weights * weights).sum(-1)

    for _ in range(steps):
        prob = torch.sigmoid(torch.einsum("bnp,bp->bn", x, w))
        grad = torch.einsum("bnp,bn->bp", x, prob - labels) + penalty * w
        done = grad.abs().amax(-1) <= 1e-9 * n  # converged problems stay where they are
        if bool(done.all()):
            break
        hess = (x * (prob * (1 - prob)).unsqueeze(-1)).transpose(1, 2) @ x + ridge
        step = torch.linalg.solve(hess, grad)
        # backtracking (Armijo), vectorised: the largest trial step that lowers each loss
        tried = loss(w - trials[:, None, None] * step)  # [trials, B]
        decrease = 1e-4 * trials[:, None] * (grad * step).sum(-1)
        ok = tried <= loss(w) - decrease
        moves = ok.any(0) & ~done  # no decrease left: at the optimum to float64 precision
        if not bool(moves.any()):
            break
        size = torch.where(moves, trials[ok.to(torch.uint8).argmax(0)], 0.0)
        w = w - size[:, None] * step
    return w


def probe_accuracies(
    positive: torch.Tensor,
    negative: torch.Tensor,
    folds: int,
    regularisation: float = 1.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Cross-validated accuracy ``[n_layers, n_heads]`` of a logistic-regression probe per
    head, telling positive (1) from negative (0) head outputs ``[n, n_layers, n_heads, d]``:
    seeded stratified folds, features standardised on each training fold, all heads solved
    together (what a ``StandardScaler`` + ``LogisticRegression`` pipeline computes, without
    a thousand sequential scikit-learn fits on a real model), in float64 on ``device``."""
    from sklearn.model_selection import StratifiedKFold

    n_layers, n_heads, d = positive.shape[1:]
    features = torch.cat([positive, negative]).to(device, torch.float64)
    features = features.reshape(-1, n_layers * n_heads, d).transpose(0, 1).contiguous()
    labels = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))])
    labels = labels.to(device, torch.float64)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    correct = features.new_zeros(n_layers * n_heads)
    for split in splitter.split(np.zeros(len(labels)), labels.cpu().numpy()):
        train, test = (torch.from_numpy(part).to(device) for part in split)
        fold = features[:, train]
        mean = fold.mean(dim=1, keepdim=True)
        scale = fold.std(dim=1, keepdim=True, correction=0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        w = torch.cat(
            [
                fit_logistic(chunk, labels[train], regularisation)
                for chunk in ((fold - mean) / scale).split(HEADS_PER_SOLVE)
            ]
        )
        held_out = (features[:, test] - mean) / scale
        scores = torch.einsum("bnd,bd->bn", held_out, w[:, :-1]) + w[:, -1:]
        predicted = (scores > 0).double()
        correct += (predicted == labels[test]).double().mean(dim=1) / folds
    return correct.float().cpu().view(n_layers, n_heads)


def probe_device(model: nn.Module) -> torch.device:
    """Where the probes are solved: the model's CUDA device (float64 there is fast), else
    the CPU (MPS has no float64)."""
    device = next(model.parameters()).device
    return device if device.type == "cuda" else torch.device("cpu")


def mass_mean_directions(
    positive: torch.Tensor, negative: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per head: the unit mass-mean direction ``[L, H, d]``, sigma ``[L, H]`` (population
    std of all activations projected on it) and the separation ``|mean difference| / sigma``."""
    difference = positive.mean(dim=0) - negative.mean(dim=0)
    norm = difference.norm(dim=-1)
    directions = difference / norm.clamp_min(1e-12).unsqueeze(-1)
    projected = (torch.cat([positive, negative]) * directions).sum(dim=-1)  # [n, L, H]
    sigma = projected.std(dim=0, correction=0)
    return directions, sigma, norm / sigma.clamp_min(1e-12)


def select_heads(
    accuracy: torch.Tensor, separation: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(layers, heads) of the k heads of highest accuracy ``[L, H]``, best first; equal
    accuracies (frequent with few prompts) are ordered by separation, then by position."""
    n_heads = accuracy.shape[1]
    by_separation = torch.sort(separation.flatten(), descending=True, stable=True).indices
    by_accuracy = torch.sort(accuracy.flatten()[by_separation], descending=True, stable=True)
    flat = by_separation[by_accuracy.indices[:k]]
    return flat // n_heads, flat % n_heads


def bias_shifts(
    adapter: ModelAdapter,
    layers: torch.Tensor,
    heads: torch.Tensor,
    head_shifts: torch.Tensor,
) -> dict[int, torch.Tensor]:
    """Per steered layer, the float32 ``o_proj`` bias shift ``W_o @ delta`` where ``delta``
    holds ``head_shifts[i]`` ([k, head_dim]) in the slice of head ``heads[i]``."""
    n_heads, head_dim = head_geometry(adapter)
    delta = torch.zeros(adapter.n_layers, n_heads, head_dim)
    delta.index_put_((layers.long(), heads.long()), head_shifts.float(), accumulate=True)
    shifts = {}
    for layer in torch.unique(layers).tolist():
        weight = o_proj(adapter, layer).weight
        shifts[layer] = weight.float() @ delta[layer].flatten().to(weight.device)
    return shifts


@contextmanager
def shift_heads(
    model: nn.Module, layers: torch.Tensor, heads: torch.Tensor, head_shifts: torch.Tensor
) -> Iterator[None]:
    """Inside the block, head ``heads[i]`` of layer ``layers[i]`` outputs
    ``x + head_shifts[i]`` at every position: folded into ``o_proj``'s bias, whose original
    (or absence) is restored on exit, also on exceptions."""
    adapter = ModelAdapter.from_model(model)
    shifts = bias_shifts(adapter, layers, heads, head_shifts)
    with shifted_biases({o_proj(adapter, layer): shift for layer, shift in shifts.items()}):
        yield


@METHODS.register("iti")
class ITI(SteeringMethod):
    """Shift the top-K probe-selected attention heads along their mass-mean directions."""

    description = (
        "Inference-Time Intervention (Li et al. 2023): shift the top-K probed attention "
        "heads by s sigma along their mass-mean directions"
    )
    neutral_strength = 0.0
    default_strengths = (-5.0, 5.0)
    strength_domain = (-100.0, 100.0)
    artifact_tensors = {
        "layers": TensorSpec("index", ("k",), "n_layers"),
        "heads": TensorSpec("index", ("k",), "n_heads"),
        "directions": TensorSpec("float", ("k", "head_dim")),
        "sigma": TensorSpec("float", ("k",)),
    }

    @dataclass
    class Config:
        top_k: int = 48
        """Heads steered (the paper's K = 48), capped at the model's number of heads."""
        folds: int = 5
        """Cross-validation folds of the head probes (capped by the prompts per side)."""
        regularisation: float = 1.0
        """Inverse L2 strength ``C`` of each head's logistic regression."""
        seed: int = 0
        """Seed of the fold split and the probes."""

        def __post_init__(self) -> None:
            if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
                raise ValueError(f"top_k must be a positive integer, got {self.top_k!r}")
            if self.folds < 2:
                raise ValueError(f"folds must be at least 2, got {self.folds}")
            if not self.regularisation > 0:
                raise ValueError(f"regularisation must be > 0, got {self.regularisation}")

    config: Config

    def check_model(self, adapter: Any) -> None:
        head_geometry(adapter)

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        cfg = self.config
        folds = min(cfg.folds, len(positive), len(negative))
        if folds < 2:
            raise SteerbenchError(
                f"ITI cross-validates its head probes: it needs at least 2 positive and 2 "
                f"negative prompts, got {len(positive)} and {len(negative)}"
            )
        pos = capture_head_outputs(ctx, positive)
        neg = capture_head_outputs(ctx, negative)
        n_layers, n_heads, head_dim = pos.shape[1:]
        log.info("probing %d attention heads (%d-fold CV)", n_layers * n_heads, folds)
        accuracy = probe_accuracies(
            pos, neg, folds, cfg.regularisation, cfg.seed, probe_device(ctx.model)
        )
        directions, sigma, separation = mass_mean_directions(pos, neg)
        k = min(cfg.top_k, n_layers * n_heads)
        layers, heads = select_heads(accuracy, separation, k)
        tensors = {
            "layers": layers,
            "heads": heads,
            "directions": directions[layers, heads],
            "sigma": sigma[layers, heads],
            "accuracy": accuracy,
        }
        chosen = accuracy[layers, heads]
        per_layer = torch.bincount(layers, minlength=n_layers).tolist()
        summary = {
            "k": k,
            "n_heads_total": n_layers * n_heads,
            "cv_folds": folds,
            "chosen_accuracy_min": round(float(chosen.min()), 4),
            "chosen_accuracy_mean": round(float(chosen.mean()), 4),
            "heads_per_layer": {str(i): n for i, n in enumerate(per_layer) if n},
        }
        return self.make_artifact(
            ctx,
            positive,
            negative,
            tensors,
            n_heads=n_heads,
            head_dim=head_dim,
            summary=summary,
        )

    def apply(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        n_heads, head_dim = head_geometry(ModelAdapter.from_model(model))
        directions = artifact.tensors["directions"]
        fitted = (artifact.metadata.get("n_heads"), directions.shape[1])
        if fitted != (n_heads, head_dim):
            raise SteerbenchError(
                f"artifact was fitted on (heads, head_dim) = {fitted}, but this model has "
                f"{(n_heads, head_dim)}; fit it on this model"
            )
        shifts = strength * artifact.tensors["sigma"].float().unsqueeze(-1) * directions.float()
        return shift_heads(model, artifact.tensors["layers"], artifact.tensors["heads"], shifts)
