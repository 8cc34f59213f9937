"""SAE-feature steering: contrast prompts in a sparse autoencoder's feature space.

fit: encode the last-token residual (at the SAE's layer) of positive and negative prompts,
rank features by the difference of mean activation, keep the top n (default 8), and report
each feature's density. Two ways to steer:

- ``sae`` (scale): inside sae-lens's own encode/decode (its input processing and
  activation normalisation included), the chosen features' activations f_i are multiplied
  by m and the change of the reconstruction is added to the stream, x' = x + dec(m f) -
  dec(f), the SAE's reconstruction error never entering the model: m = 0 removes the
  features, 1 is unchanged, > 1 amplifies. Features of standard and JumpReLU SAEs are
  computed independently of each other, so the artifact keeps a sae-lens SAE of only the
  chosen features (same config, their rows and columns), and the per-token cost is a
  [d_model x n] product.
- ``sae-add``: x' = x + s * sum_i W_dec[i], as in SAELens steering tutorials (a fixed
  vector: folded into a bias, zero per-token cost).

The SAE comes from ``sae`` (a directory saved by sae-lens), ``sae_release``/``sae_id``
(a published sae-lens SAE, for users with a hub), or is trained now on the model (cached).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from steerbench.errors import SteerbenchError
from steerbench.interventions import add_to_residual
from steerbench.method import METHODS, Artifact, FitContext, SteeringMethod, TensorSpec
from steerbench.model.adapter import ModelAdapter

log = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURES = ("standard", "jumprelu")
FEATURE_AXIS = {"W_enc": 1, "b_enc": 0, "W_dec": 0, "threshold": 0}
"""Where each per-feature parameter of a standard / JumpReLU sae-lens SAE indexes its
features; ``b_dec`` is shared by all features."""
SHARED_PARAMETERS = ("b_dec",)


def rank_features(f_pos: torch.Tensor, f_neg: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the n features whose mean activation rises most on positive prompts."""
    diff = f_pos.mean(0) - f_neg.mean(0)
    return torch.topk(diff, min(n, diff.numel())).indices


def check_supported(sae) -> None:
    """Refuse SAEs whose features are not independent of each other, or whose input is
    not the residual stream as it is, with a message that says what works."""
    architecture = sae.cfg.architecture()
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise SteerbenchError(
            f"SAE architecture {architecture!r} is not supported (its features are not "
            f"computed independently, so a feature subset would change them); use a "
            f"{' or '.join(SUPPORTED_ARCHITECTURES)} SAE"
        )
    if sae.cfg.reshape_activations != "none":
        raise SteerbenchError(
            f"SAE reshapes its input ({sae.cfg.reshape_activations!r}, an attention-output "
            f"SAE); steerbench steers the residual stream: use a residual-stream SAE"
        )
    unknown = sorted(set(sae.state_dict()) - set(FEATURE_AXIS) - set(SHARED_PARAMETERS))
    if unknown:
        raise SteerbenchError(
            f"SAE has parameters steerbench does not know how to subset ({', '.join(unknown)}); "
            f"use a {' or '.join(SUPPORTED_ARCHITECTURES)} SAE"
        )


def feature_subset(sae, features: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
    """sae-lens parameters and config of the same SAE restricted to ``features``."""
    tensors = {}
    for name, tensor in sae.state_dict().items():
        if name in FEATURE_AXIS:
            tensor = tensor.index_select(FEATURE_AXIS[name], features.to(tensor.device))
        tensors[name] = tensor.detach().to("cpu", torch.float32).clone()
    config = {**sae.cfg.to_dict(), "d_sae": len(features), "dtype": "float32", "device": "cpu"}
    return tensors, config


def subset_sae(artifact: Artifact, device: torch.device):
    """The artifact's feature subset as a sae-lens SAE (float32, on ``device``)."""
    from steerbench.integrations.sae_training import sae_class

    config = artifact.metadata.get("sae_config")
    if config is None:
        raise SteerbenchError(
            "this sae artifact was made by an older steerbench (no sae_config); delete it "
            "and fit it again"
        )
    try:
        sae = sae_class().from_dict(dict(config))
        sae.load_state_dict({name: artifact.tensors[name] for name in sae.state_dict()})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise SteerbenchError(
            f"sae artifact does not hold a loadable SAE ({str(err).splitlines()[0]}); fit it again"
        ) from err
    return sae.to(device=device)


@contextmanager
def scale_features(model, layer: int, sae, multiplier: float) -> Iterator[None]:
    """x -> x + dec(m f(x)) - dec(f(x)) after ``layer``, with sae-lens's encode/decode.

    sae-lens's runtime normalisations (``layer_norm``, ``constant_norm_rescale``) keep
    per-input state from ``encode`` for one ``decode``, so each decode follows its own
    encode. Where that processing is undefined (the zero vector of a padding position under
    a norm rescale) the stream is left as it is."""
    adapter = ModelAdapter.from_model(model)

    def hook(_module, _args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        with torch.no_grad():
            features = sae.encode(hidden)
            steered = sae.decode(multiplier * features)
            sae.encode(hidden)
            change = steered - sae.decode(features)
            # a zero vector (a padding position) has no norm to rescale by: leave it
            change = torch.nan_to_num(change, nan=0.0, posinf=0.0, neginf=0.0)
        steered_hidden = hidden + change.to(hidden.dtype)
        return (steered_hidden, *output[1:]) if isinstance(output, tuple) else steered_hidden

    handle = adapter.layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@METHODS.register("sae")
class SAEFeatures(SteeringMethod):
    """Scale the contribution of the SAE features that separate positive from negative."""

    description = "SAE features (sae-lens): scale the top contrastive features' contribution"
    neutral_strength = 1.0
    default_strengths = (0.0, 2.0)
    strength_domain = (0.0, 100.0)
    artifact_tensors = {
        "W_enc": TensorSpec("float", ("d_model", "n_features")),
        "W_dec": TensorSpec("float", ("n_features", "d_model")),
        "b_dec": TensorSpec("float", ("d_model",)),
    }

    @dataclass
    class Config:
        sae: str | None = None
        """Directory of a sae-lens SAE; None trains one (cached) on the model."""
        sae_release: str | None = None
        sae_id: str | None = None
        layer: int | None = None
        """Residual layer when training one (default: CAA's layer rule)."""
        top_n: int = 8
        train_steps: int = 300
        train_width: int = 4096

    def check_model(self, adapter) -> None:
        layer = self.config.layer
        if layer is not None and not 0 <= layer < adapter.n_layers:
            raise SteerbenchError(
                f"sae layer {layer} is outside the model's layers 0..{adapter.n_layers - 1}"
            )

    def get_sae(self, ctx: FitContext):
        from steerbench.integrations import sae_training as sae_lib

        cfg = self.config
        if cfg.sae or cfg.sae_release:
            return sae_lib.load_sae(cfg.sae, cfg.sae_release, cfg.sae_id), None
        from steerbench.model.weights import cache_dir

        adapter = ModelAdapter.from_model(ctx.model)
        layer = (
            cfg.layer if cfg.layer is not None else sae_lib.default_training_layer(adapter.n_layers)
        )
        settings = sae_lib.SAETrainingSettings(width=cfg.train_width, steps=cfg.train_steps)
        tag = hashlib.sha256(
            repr((ctx.model_name, ctx.model_revision, layer, asdict(settings))).encode()
        ).hexdigest()[:12]
        directory = cache_dir() / "sae" / f"{Path(ctx.model_name).name}-L{layer}-{tag}"
        if (directory / "cfg.json").is_file():
            log.info("Reusing SAE %s", directory)
            return sae_lib.load_sae(str(directory)), directory
        log.info(
            "Training an SAE on layer %d of %s (%s steps)", layer, ctx.model_name, settings.steps
        )
        acts = sae_lib.collect_residuals(
            ctx.model,
            ctx.tokenizer,
            sae_lib.training_texts(),
            layer,
            fmt=ctx.fmt,
            batch_size=ctx.batch_size,
            max_tokens=settings.max_tokens,
            progress=ctx.progress,
        )
        trained, report = sae_lib.train_sae(
            acts,
            settings,
            hook_name=f"resid_post.{layer}",
            model_name=ctx.model_name,
            progress=ctx.progress,
        )
        sae_lib.save_sae(trained, directory, report, settings, layer)
        log.info("SAE quality: %s", {k: round(v, 4) for k, v in report.items()})
        return sae_lib.load_sae(str(directory)), directory

    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        from steerbench.integrations import sae_training as sae_lib

        sae, trained_dir = self.get_sae(ctx)
        check_supported(sae)
        adapter = ModelAdapter.from_model(ctx.model)
        layer = sae_lib.sae_layer(
            sae,
            self.config.layer
            if self.config.layer is not None
            else sae_lib.default_training_layer(adapter.n_layers),
        )
        sae_lib.check_matches(sae, adapter, layer)
        sae = sae.to(device="cpu", dtype=torch.float32)  # activations are captured on CPU
        with torch.no_grad():
            f_pos = sae.encode(ctx.activations(positive).resid_post[:, layer])
            f_neg = sae.encode(ctx.activations(negative).resid_post[:, layer])
        features = rank_features(f_pos, f_neg, self.config.top_n)
        both = torch.cat([f_pos, f_neg])
        prompts = [*positive, *negative]
        subset, sae_config = feature_subset(sae, features)
        tensors = {
            "features": features,
            "diff": (f_pos.mean(0) - f_neg.mean(0))[features],
            "density": (both[:, features] > 0).float().mean(0),
            **subset,
        }
        summary = {
            "layer": layer,
            "sae": str(self.config.sae or trained_dir or self.config.sae_id),
            "d_sae": sae.cfg.d_sae,
            "features": [
                {
                    "feature": int(f),
                    "diff": round(float(d), 4),
                    "density": round(float(p), 3),
                    # the prompts (positive and negative) on which it fires hardest
                    "top_prompts": [
                        prompts[i] for i in both[:, f].topk(min(3, len(prompts))).indices.tolist()
                    ],
                }
                for f, d, p in zip(features, tensors["diff"], tensors["density"])
            ],
        }
        return self.make_artifact(
            ctx, positive, negative, tensors, layer=layer, sae_config=sae_config, summary=summary
        )

    def apply(self, model, artifact: Artifact, strength: float) -> AbstractContextManager[None]:
        sae = subset_sae(artifact, next(model.parameters()).device)
        return scale_features(model, artifact.metadata["layer"], sae, strength)


@METHODS.register("sae-add")
class SAEFeatureAddition(SAEFeatures):
    """Add the chosen features' decoder directions, as in SAELens steering tutorials."""

    description = "SAE features (sae-lens): add strength x the top features' decoder directions"
    neutral_strength = 0.0
    default_strengths = (-8.0, 8.0)
    strength_domain = (-1000.0, 1000.0)

    def apply(self, model, artifact: Artifact, strength: float) -> AbstractContextManager[None]:
        direction = artifact.tensors["W_dec"].sum(0)
        return add_to_residual(model, {artifact.metadata["layer"]: strength * direction})
