"""CAST: Conditional Activation Steering (Lee et al. 2024, "Programming Refusal with
Conditional Activation Steering", arXiv:2409.05907).

CAA adds its vector to every prompt; CAST only to prompts that meet a *condition* read from
the model (refusal added to harmful requests; harmless ones answered exactly as before).
Fitted on the discovery contrast: the behaviour vector is CAA's (raw mean difference of
last-token residual activations, CAA's layer rule); the condition direction ``c`` is the
unit mean difference at the condition layer (default ``L // 8``, at least 1, layers before
the first steering layer); the threshold ``t`` on the projections ``h @ c`` maximises the
balanced accuracy of positive vs negative prompts (separable: the midpoint of the closest
pair), or is given. The artifact records how many discovery prompts of each side fire.

A prompt fires when its last token's unsteered residual stream at the condition layer
projects on ``c`` above ``t`` (``fires: below``: at most ``t``, to steer all *but* a
category). Firing rows of a batch are steered exactly as CAA at the same strength, the
others are left bit for bit unsteered. (The paper scores the cosine of ``h`` with its
tanh-squashed projection, on the prompt's mean or last token.) Strength ``s``: ``s x`` the
vector on firing prompts only; neutral 0, 1 adds the behaviour there, -1 removes it there.

Scope. ``generation`` (default): the prompt is read unsteered (the decision needs all of it)
and a firing row's generated tokens are steered: CAA ``scope: generation`` on firing rows,
bit for bit, under any batching. ``all`` also steers the prompt in the pass that decides it
(as the paper's code does): CAA ``scope: all`` on firing rows, to rounding, when one pass
holds the whole prompt. A prefix shared by a call's prompts and run once before them
(``steerbench.model.kv_batch.SharedPrefix``, the system turn) is a prompt of its own to
CAST: under ``all`` it is steered for every row if it fires itself (logged). A plain pass
over a prompt and text after it (a scored answer) is decided at its last token.

Continuous batching. Rows join and leave the batch between passes, and a pass does not say
which rows it carries, so a row is recognised by its fingerprint, the newest key of the KV
cache's last layer (context dependent, copied exactly by every drop, join and padding); the
decision of its prompt pass is kept while it decodes. A row that matches no prompt decided
inside the block is an error, never a guess.

Counting. ``steer`` returns a ``ConditionalSteering``: ``counts`` holds the prompts decided
and steered inside it (``take_counts()`` returns and resets them, e.g. per prompt set); the
totals are logged on exit. A shared prefix (recognised when a pass continues its cache) is
not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerbench.errors import SteerbenchError
from steerbench.interventions import decoding_passes
from steerbench.method import METHODS, Artifact, FitContext, TensorSpec
from steerbench.model.adapter import ModelAdapter
from steerbench.vector_steering import ResidualVectorMethod, mean_difference

log = logging.getLogger(__name__)

FIRES = ("above", "below")
FINGERPRINT_WIDTH = 64
"""Key entries compared per row: exact copies, so a few dozen distinguish any two contexts."""
POOL_ROWS = 1024
"""Decided prompts kept for rows yet to decode (a plain forward pass never decodes)."""


def balanced_accuracy(
    positive: torch.Tensor, negative: torch.Tensor, thresholds: torch.Tensor
) -> torch.Tensor:
    """Per threshold, the mean of the positive rate above it and the negative rate at or
    below it: a classifier's accuracy with the classes weighted equally."""
    above = (positive[None, :] > thresholds[:, None]).double().mean(1)
    below = (negative[None, :] <= thresholds[:, None]).double().mean(1)
    return (above + below) / 2


def balanced_threshold(positive: torch.Tensor, negative: torch.Tensor) -> tuple[float, float]:
    """The threshold (and its balanced accuracy) that best separates positive from negative
    scores: every midpoint between neighbouring scores is tried at once; among equally good
    ones the middle one is taken (the max-margin midpoint when the scores separate)."""
    scores = torch.cat([positive, negative]).double().sort().values
    span = float(scores[-1] - scores[0]) or 1.0
    candidates = torch.cat([scores[:1] - span, (scores[1:] + scores[:-1]) / 2, scores[-1:] + span])
    accuracy = balanced_accuracy(positive.double(), negative.double(), candidates)
    best = torch.nonzero(accuracy == accuracy.max())[:, 0]
    chosen = int(best[len(best) // 2])
    return float(candidates[chosen]), float(accuracy[chosen])


@dataclass
class SteeredCounts:
    """Prompts decided inside a steering context, and how many of them were steered."""

    prompts: int = 0
    steered: int = 0


@METHODS.register("cast")
class CAST(ResidualVectorMethod):
    """CAA's vector, added only to the rows whose prompt crosses a condition threshold."""

    description = (
        "Conditional Activation Steering: add CAA's vector only to prompts whose activation "
        "crosses a threshold on a condition direction"
    )
    default_strengths = (-1.0, 1.0)
    artifact_tensors = {
        "vectors": TensorSpec("float", ("n_layers", "d_model")),
        "condition": TensorSpec("float", ("d_model",)),
        "threshold": TensorSpec("float", ()),
    }

    @dataclass
    class Config(ResidualVectorMethod.Config):
        scope: str = "generation"
        """Positions steered in firing rows: "generation" (answer) or "all" (and prompt)."""
        condition_layer: int | None = None
        """Layer whose residual stream decides; None: L // 8 (>= 1) before the first steered."""
        threshold: float | None = None
        """Fixed threshold on the projection; None: fitted on the discovery prompts."""
        fires: str = "above"
        """Steer prompts whose projection is "above" the threshold, or "below" (at most) it."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.fires not in FIRES:
                raise SteerbenchError(
                    f"fires must be one of {', '.join(FIRES)}, got {self.fires!r}"
                )

    config: Config

    def vectors(self, positive: torch.Tensor, negative: torch.Tensor, layers: list[int]):
        return mean_difference(positive, negative), {}

    def check_model(self, adapter) -> None:
        self.condition_layer(adapter.n_layers)

    def condition_layer(self, n_layers: int) -> int:
        """The configured (or default) condition layer, checked against the steering layers."""
        first = min(self.steering_layers(n_layers))
        layer = self.config.condition_layer
        if layer is None:
            layer = max(0, first - max(1, n_layers // 8))
        check_condition_layer(layer, first, n_layers, self.config.scope)
        return layer

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        pos = ctx.activations(positive).resid_post.float()
        neg = ctx.activations(negative).resid_post.float()
        layers = self.steering_layers(pos.shape[1])
        layer = self.condition_layer(pos.shape[1])
        vectors, _ = self.vectors(pos, neg, layers)
        norm = float(vectors[layer].norm())
        if norm == 0.0:
            raise SteerbenchError(f"no condition direction: equal means at layer {layer}")
        direction = vectors[layer] / norm
        pos_scores, neg_scores = pos[:, layer] @ direction, neg[:, layer] @ direction
        if self.config.threshold is None:
            threshold, _ = balanced_threshold(pos_scores, neg_scores)
        else:
            threshold = self.config.threshold
        stored = torch.tensor(threshold, dtype=torch.float32)  # the value ``apply`` reads
        threshold = float(stored)
        accuracy = float(balanced_accuracy(pos_scores, neg_scores, stored.double()[None])[0])
        fired = {
            "positive": int(fires(pos_scores, threshold, self.config.fires).sum()),
            "negative": int(fires(neg_scores, threshold, self.config.fires).sum()),
        }
        extra = {"layers": layers, "condition_layer": layer, "threshold": threshold}
        extra |= {"balanced_accuracy": accuracy, "discovery_fired": fired}
        summary = {**extra, "threshold": round(threshold, 4)}
        tensors = {"vectors": vectors, "condition": direction, "threshold": stored}
        return self.make_artifact(ctx, positive, negative, tensors, summary=summary, **extra)

    def apply(self, model: nn.Module, artifact: Artifact, strength: float) -> ConditionalSteering:
        vectors = artifact.tensors["vectors"]
        layers = self.steering_layers(vectors.shape[0])
        layer = self.condition_layer(vectors.shape[0])
        if layer != artifact.metadata.get("condition_layer"):
            raise SteerbenchError(
                f"cast artifact was fitted at condition layer "
                f"{artifact.metadata.get('condition_layer')!r}, not {layer}; fit it again"
            )
        threshold = float(artifact.tensors["threshold"])
        condition = Condition(layer, artifact.tensors["condition"], threshold, self.config.fires)
        shifts = {index: strength * vectors[index] for index in layers}
        return ConditionalSteering(model, shifts, condition, self.config.scope)


def check_condition_layer(layer: int, first: int, n_layers: int, scope: str) -> None:
    """One line for a condition layer the model lacks, or one after the first steered layer
    under ``scope: all`` (the prompt pass must decide before it reaches a steered layer)."""
    if not 0 <= layer < n_layers:
        raise SteerbenchError(f"cast condition_layer must be in [0, {n_layers - 1}], got {layer}")
    if scope == "all" and layer > first:
        raise SteerbenchError(
            f"cast with scope all decides in the prompt pass before steering it: "
            f"condition_layer {layer} comes after the first steering layer {first}; "
            "use an earlier condition layer or scope generation"
        )


def fires(scores: torch.Tensor, threshold: float, rule: str) -> torch.Tensor:
    """Which scores meet the condition: above the threshold, or (``below``) at most it."""
    above = scores > threshold
    return above if rule == "above" else ~above


@dataclass(frozen=True)
class Condition:
    """Where and how a prompt is decided: layer, unit direction, threshold, rule."""

    layer: int
    direction: torch.Tensor
    threshold: float
    rule: str


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _cache(kwargs: dict[str, Any], output: Any = None) -> Any:
    found = getattr(output, "cache", None)
    return found if found is not None else kwargs.get("cache", kwargs.get("past_key_values"))


def fingerprints(cache: Any) -> torch.Tensor | None:
    """Each row's newest key of the cache's last layer (``[rows, FINGERPRINT_WIDTH]``), or
    None for a cache that keeps no per-layer keys."""
    layers = getattr(cache, "layers", None)
    keys = getattr(layers[-1], "keys", None) if layers else None
    if not isinstance(keys, torch.Tensor) or keys.dim() != 4 or keys.shape[2] == 0:
        return None
    return keys[:, :, -1, :].flatten(1)[:, :FINGERPRINT_WIDTH].clone()


def last_positions(mask: Any, width: int, rows: int, device: torch.device) -> torch.Tensor:
    """Each row's last real position among the ``width`` fed tokens (left or right padding:
    the last 1 of its attention mask; without a 2-D mask, the last position)."""
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return torch.full((rows,), width - 1, device=device)
    fed = mask[:, -width:].ne(0).to(device)
    return (fed * torch.arange(width, device=device)).argmax(1)


class ConditionalSteering(AbstractContextManager[None]):
    """The hooks of one ``steer`` block: decide each prompt row at the condition layer,
    keep each row's decision while it decodes, add the shifts to the rows that fire."""

    def __init__(
        self,
        model: nn.Module,
        shifts: dict[int, torch.Tensor],
        condition: Condition,
        scope: str,
    ) -> None:
        self.adapter = ModelAdapter.from_model(model)
        param = next(model.parameters())
        self.shifts = {k: v.to(device=param.device, dtype=param.dtype) for k, v in shifts.items()}
        self.direction = condition.direction.to(device=param.device, dtype=torch.float32)
        self.condition, self.scope = condition, scope
        self.counts = SteeredCounts()
        self._stack = ExitStack()
        self._decoding = [False]
        self._mask: Any = None
        self._fire: torch.Tensor | None = None  # this pass's rows
        self._any_fire = False
        self._running: tuple[torch.Tensor, torch.Tensor] | None = None  # (fingerprints, fire)
        self._pool: list[tuple[torch.Tensor, torch.Tensor]] = []  # decided, not yet decoding

    def take_counts(self) -> SteeredCounts:
        """The counts so far, reset to zero (a caller reads one prompt set at a time)."""
        counts, self.counts = self.counts, SteeredCounts()
        return counts

    def __enter__(self) -> None:
        stack = self._stack
        try:
            self._decoding = stack.enter_context(decoding_passes(self.adapter))
            backbone = self.adapter.backbone
            hooks = [
                backbone.register_forward_pre_hook(self._before, with_kwargs=True),
                backbone.register_forward_hook(self._after, with_kwargs=True),
                self.adapter.layers[self.condition.layer].register_forward_hook(self._decide),
            ]  # the condition hook comes first: at a shared layer it reads before the shift
            hooks += [
                self.adapter.layers[layer].register_forward_hook(self._steerer(shift))
                for layer, shift in self.shifts.items()
            ]
            for handle in hooks:
                stack.callback(handle.remove)
        except BaseException:
            stack.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
        log.info("cast steered %d of %d prompts", self.counts.steered, self.counts.prompts)

    # -- hooks ------------------------------------------------------------------------------

    def _before(self, _module: nn.Module, _args: tuple, kwargs: dict[str, Any]) -> None:
        """Before a pass: a decoding step takes its rows' decisions; a prompt pass is
        decided at the condition layer (and a cache it continues was a shared prefix)."""
        cache = _cache(kwargs)
        self._fire, self._any_fire = None, False
        if self._decoding[0]:
            self._fire = self._match(fingerprints(cache))
            return
        self._mask = kwargs.get("attention_mask")
        if cache is not None and int(cache.get_seq_length()) > 0:
            self._forget_prefix(fingerprints(cache))

    def _decide(self, _module: nn.Module, _args: tuple, output: Any) -> None:
        if self._decoding[0]:
            return
        hidden = _hidden(output)
        rows, width = hidden.shape[:2]
        last = last_positions(self._mask, width, rows, hidden.device)
        scores = hidden[torch.arange(rows, device=hidden.device), last].float() @ self.direction
        self._fire = fires(scores, self.condition.threshold, self.condition.rule)
        steered = int(self._fire.sum())
        self._any_fire = steered > 0
        self.counts.prompts += rows
        self.counts.steered += steered

    def _steerer(self, shift: torch.Tensor):
        def hook(_module: nn.Module, _args: tuple, output: Any) -> Any:
            if not self._any_fire or self._fire is None:
                return None
            if not self._decoding[0] and self.scope != "all":
                return None
            hidden = _hidden(output)
            steered = torch.where(self._fire[:, None, None], hidden + shift, hidden)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return hook

    def _after(self, _module: nn.Module, _args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        """After a pass: remember each row's newest key, to know it at its next step."""
        keys = fingerprints(_cache(kwargs, output))
        if keys is None or self._fire is None:
            return
        if self._decoding[0]:
            self._running = (keys, self._fire)
            return
        self._pool.append((keys, self._fire))
        while len(self._pool) > 1 and sum(len(k) for k, _ in self._pool) > POOL_ROWS:
            self._pool.pop(0)

    # -- which row is which -------------------------------------------------------------------

    def _known(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(fingerprints, fire) of every row decided and not dropped: running, then new."""
        known = ([self._running] if self._running is not None else []) + self._pool
        if not known:
            return None
        return torch.cat([k for k, _ in known]), torch.cat([f for _, f in known])

    def _match(self, keys: torch.Tensor | None) -> torch.Tensor:
        """The decisions of a decoding step's rows: each row's fingerprint equals the one it
        had after its previous pass (the last step, or its prompt pass if it just joined)."""
        known = self._known()
        if keys is None or known is None:
            raise SteerbenchError(
                "cast cannot tell which prompt a decoding row belongs to (no per-layer keys in "
                "the KV cache, or a prompt run outside the steering block); generate inside "
                "`with method.steer(...)` with a dynamic cache"
            )
        seen, seen_fire = known
        same = (keys[:, None, :] == seen[None, :, :]).all(-1)
        fire = (same & seen_fire[None, :]).any(1)
        mixed = fire & (same & ~seen_fire[None, :]).any(1)
        flags = torch.stack([~same.any(1).all(), mixed.any(), fire.any()]).tolist()
        if flags[0]:
            raise SteerbenchError(
                "cast lost track of a decoding row: it matches no prompt decided in this "
                "steering block; decode only prompts prefilled inside it"
            )
        if flags[1]:
            log.warning("cast: two prompts with identical keys were decided apart; steering both")
        self._running, self._pool, self._any_fire = (keys, fire), [], flags[2]
        return fire

    def _forget_prefix(self, prefix: torch.Tensor | None) -> None:
        """Decided rows whose cache this prompt pass continues were a prefix, not prompts."""
        if prefix is None or not self._pool:
            return
        keys, fire = torch.cat([k for k, _ in self._pool]), torch.cat([f for _, f in self._pool])
        shared = (keys[:, None, :] == prefix[None, :, :]).all(-1).any(1)
        gone, steered = torch.stack([shared.sum(), (shared & fire).sum()]).tolist()
        self.counts.prompts -= gone
        self.counts.steered -= steered
        if steered and self.scope == "all":
            log.warning("cast: the shared prompt prefix fired and is steered for every row")
        self._pool = [(keys[~shared], fire[~shared])]
