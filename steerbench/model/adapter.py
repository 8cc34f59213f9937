"""Architecture adapter: where the layers, MLP neurons and residual stream live in a model.

Every steering method speaks in named *sites* (TransformerLens style), never in module
paths:

- ``mlp_in.{layer}``: the input of the layer's MLP ``down_proj``, i.e. the MLP neuron
  activations (width ``d_mlp``). CNA reads and scales these.
- ``resid_post.{layer}``: the residual stream after the decoder layer (width ``d_model``).
  CAA reads and shifts these.

All supported architectures share the Llama layout (``layers[i].mlp.down_proj``), so one
small adapter covers them; anything else is refused with a message naming what is
supported.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from steerbench.errors import SteerbenchError

SUPPORTED_ARCHITECTURES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "gemma3_text",
)

SITE_KINDS = ("mlp_in", "resid_post")
DEFAULT_LAYER_FRACTION = 0.6


def default_steering_layer(n_layers: int) -> int:
    """The residual layer ``floor(0.6 * n_layers)``, middle-to-late, where behavioural
    directions are usually most steerable (Rimsky et al.; Arditi et al.): the default of
    CAA, directional ablation and the SAE, so that they act at the same place."""
    return math.floor(DEFAULT_LAYER_FRACTION * n_layers)


def _text_config(model: nn.Module):
    config = model.config
    return getattr(config, "text_config", None) or config


@dataclass
class ModelAdapter:
    """Named access to the decoder layers of a loaded Hugging Face causal LM."""

    model: nn.Module
    backbone: nn.Module
    layers: nn.ModuleList

    @classmethod
    def from_model(cls, model: nn.Module) -> ModelAdapter:
        model_type = getattr(_text_config(model), "model_type", None)
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise SteerbenchError(
                f"architecture {model_type!r} is not supported; steerbench supports "
                f"{', '.join(SUPPORTED_ARCHITECTURES)} (models with layers[i].mlp.down_proj)"
            )
        # Hugging Face modules expose their children as dynamic attributes: typed as Any here.
        found: Any = model
        backbone: Any = found.get_decoder() if hasattr(found, "get_decoder") else found.model
        backbone = getattr(backbone, "language_model", backbone)
        layers = getattr(backbone, "layers", None)
        if layers is None or not all(hasattr(layer.mlp, "down_proj") for layer in layers):
            raise SteerbenchError(
                f"{model_type} model has no layers[i].mlp.down_proj; it cannot be steered"
            )
        return cls(model=model, backbone=backbone, layers=layers)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_mlp(self) -> int:
        return self.down_proj(0).in_features

    @property
    def d_model(self) -> int:
        return self.down_proj(0).out_features

    def block(self, layer: int) -> Any:
        """Decoder layer ``layer`` (its children are dynamic attributes, hence Any)."""
        return self.layers[layer]

    def down_proj(self, layer: int) -> nn.Linear:
        return self.block(layer).mlp.down_proj

    def site_width(self, kind: str) -> int:
        return {"mlp_in": self.d_mlp, "resid_post": self.d_model}[kind]

    @property
    def has_post_norms(self) -> bool:
        """Gemma 2/3 normalise each sublayer's output before adding it to the residual
        stream, so a bias or a projection folded into ``o_proj``/``down_proj`` would be
        distorted by that norm; interventions on the stream then use hooks instead."""
        return hasattr(self.block(0), "post_feedforward_layernorm")

    @property
    def embeddings_tied(self) -> bool:
        """True when the unembedding shares the embedding's weight tensor (tied embeddings):
        an edit of one is then an edit of the other, so no method may fold into it."""
        model: Any = self.model
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if output is None:
            return False
        backbone: Any = self.backbone
        embed = backbone.embed_tokens.weight
        return output.weight is embed or output.weight.data_ptr() == embed.data_ptr()

    def residual_writers(self, layer: int) -> list[nn.Module]:
        """The modules whose outputs are added to the residual stream inside ``layer``."""
        block = self.block(layer)
        if self.has_post_norms:
            return [block.post_attention_layernorm, block.post_feedforward_layernorm]
        return [block.self_attn.o_proj, block.mlp.down_proj]


def parse_site(site: str) -> tuple[str, int]:
    """``"mlp_in.3"`` -> ``("mlp_in", 3)``, with a clear error for anything else."""
    kind, _, layer = site.partition(".")
    if kind not in SITE_KINDS or not layer.isdigit():
        raise SteerbenchError(
            f"unknown site {site!r}; sites are named <kind>.<layer> with kind in {SITE_KINDS}"
        )
    return kind, int(layer)


def _output_tensor(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def record_last_token(
    adapter: ModelAdapter, kinds: tuple[str, ...], sink: dict[str, list[torch.Tensor]]
) -> Iterator[None]:
    """Append each site's last-position activation ([batch, width], float32) to ``sink``.

    Prompts are left-padded, so position -1 is the last *real* token of every row; only
    that slice is copied, so capture costs no memory proportional to sequence length.
    """
    handles = []

    def keep(kind: str, layer: int, tensor: torch.Tensor) -> None:
        sink.setdefault(f"{kind}.{layer}", []).append(tensor[:, -1, :].float())

    try:
        for layer in range(adapter.n_layers):
            if "mlp_in" in kinds:
                handles.append(
                    adapter.down_proj(layer).register_forward_pre_hook(
                        lambda _m, args, layer=layer: keep("mlp_in", layer, args[0])
                    )
                )
            if "resid_post" in kinds:
                handles.append(
                    adapter.layers[layer].register_forward_hook(
                        lambda _m, _a, out, layer=layer: keep(
                            "resid_post", layer, _output_tensor(out)
                        )
                    )
                )
        yield
    finally:
        for handle in handles:
            handle.remove()
