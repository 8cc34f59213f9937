"""Weight-space interventions with zero per-token cost and exact restoration.

Both work by editing weights on entry and putting the saved originals back on exit
(also on exceptions), so steered generation runs the same kernels as unsteered generation:

- ``scale_mlp_neurons``: ``down_proj`` is linear, so multiplying MLP neuron j by m equals
  multiplying column j of ``down_proj.weight`` by m (CNA, random-neuron control).
- ``add_to_residual``: adding a vector v to the residual stream after layer l at every
  position equals adding v as a bias of that layer's ``down_proj`` (whose output is added
  to the residual stream) (CAA). Architectures that normalise sublayer outputs before the
  residual add (Gemma 2/3) get a forward hook on the layer instead.

Token scope: ``scope="all"`` steers every position (prompt and answer); ``"generation"``
steers only the decoding steps, the forward passes that extend a KV cache, so the prompt's
positions (and the logits of a plain forward pass) keep their unsteered values. That needs
to know which pass is running, so it always uses hooks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from steerbench.model.adapter import ModelAdapter


@contextmanager
def scale_mlp_neurons(
    model: nn.Module,
    layers: torch.Tensor,
    neurons: torch.Tensor,
    multiplier: float,
    baseline: torch.Tensor | None = None,
) -> Iterator[None]:
    """Inside the block, MLP neuron activation a of each (layer, neuron) pair becomes
    ``m * a`` or, with a ``baseline`` value b per pair (mean ablation),
    ``b + m * (a - b) = m * a + (1 - m) * b``: the column is scaled by m and
    ``(1 - m) * b * column`` is added to ``down_proj``'s bias."""
    adapter = ModelAdapter.from_model(model)
    saved_columns: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    shifts: dict[nn.Linear, torch.Tensor] = {}
    try:
        with torch.no_grad():
            if multiplier != 1.0:
                for layer in torch.unique(layers).tolist():
                    proj = adapter.down_proj(layer)
                    weight = proj.weight
                    chosen = layers == layer
                    columns = neurons[chosen].to(weight.device)
                    original = weight[:, columns].clone()
                    saved_columns.append((weight, columns, original))
                    if baseline is not None:
                        values = baseline[chosen].to(device=weight.device, dtype=torch.float32)
                        shifts[proj] = (1 - multiplier) * (original.float() @ values)
                    weight[:, columns] *= multiplier
        with shifted_biases(shifts):
            yield
    finally:
        with torch.no_grad():
            for weight, columns, original in reversed(saved_columns):
                weight[:, columns] = original


@contextmanager
def shifted_biases(shifts: Mapping[nn.Linear, torch.Tensor]) -> Iterator[None]:
    """Inside the block each Linear's bias is its own plus ``shifts[linear]`` (summed in
    float32, stored in the weight's dtype; a new bias where it had none), which folds a
    constant added to its output into the model at no per-token cost. The original bias,
    or its absence, is put back on exit, also on an exception."""
    saved: list[tuple[nn.Linear, torch.Tensor | None]] = []
    try:
        with torch.no_grad():
            for proj, shift in shifts.items():
                original = proj.bias
                saved.append((proj, original))
                shift = shift.to(proj.weight.device).float()
                bias = shift if original is None else original.detach().float() + shift
                proj.bias = nn.Parameter(bias.to(proj.weight.dtype), requires_grad=False)
        yield
    finally:
        for proj, before in reversed(saved):
            proj.bias = before  # type: ignore[assignment]  # torch types it as non-None


SCOPES = ("all", "generation")


def check_scope(scope: str) -> None:
    """One-line error for a token scope that is not in ``SCOPES`` (method configs)."""
    from steerbench.errors import SteerbenchError

    if scope not in SCOPES:
        raise SteerbenchError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")


@contextmanager
def add_to_residual(
    model: nn.Module, vectors: dict[int, torch.Tensor], scope: str = "all"
) -> Iterator[None]:
    """Add ``vectors[layer]`` to the residual stream after each given layer, at the
    positions of ``scope`` (see the module docstring)."""
    adapter = ModelAdapter.from_model(model)
    if scope == "generation":
        with decoding_passes(adapter) as decoding, _add_by_hooks(adapter, vectors, decoding):
            yield
        return
    if scope != "all":
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if adapter.has_post_norms:
        with _add_by_hooks(adapter, vectors):
            yield
        return
    shifts = {}
    for layer, vector in vectors.items():
        proj = adapter.down_proj(layer)
        shifts[proj] = vector.to(device=proj.weight.device, dtype=proj.weight.dtype)
    with shifted_biases(shifts):
        yield


@contextmanager
def decoding_passes(adapter: ModelAdapter) -> Iterator[list[bool]]:
    """A one-element list that is ``[True]`` exactly while a forward pass feeds one new token
    per row after tokens already in the KV cache (a decoding step), ``[False]`` in a prompt
    pass, also one that continues a cached prefix (``steerbench.model.generation`` runs a shared
    system prompt once, then each prompt's own tokens, at least two)."""
    state = [False]

    def before(_module, args, kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed = ids if ids is not None else kwargs.get("inputs_embeds")
        state[0] = (
            cache is not None
            and int(cache.get_seq_length()) > 0
            and fed is not None
            and fed.shape[1] == 1
        )

    handle = adapter.backbone.register_forward_pre_hook(before, with_kwargs=True)
    try:
        yield state
    finally:
        handle.remove()


@contextmanager
def _add_by_hooks(
    adapter: ModelAdapter, vectors: dict[int, torch.Tensor], only_when: list[bool] | None = None
) -> Iterator[None]:
    handles = []
    param = next(adapter.model.parameters())
    for layer, vector in vectors.items():
        shift = vector.to(device=param.device, dtype=param.dtype)

        def hook(_module, _args, output, shift=shift):
            if only_when is not None and not only_when[0]:
                return None
            if isinstance(output, tuple):
                return (output[0] + shift, *output[1:])
            return output + shift

        handles.append(adapter.layers[layer].register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
