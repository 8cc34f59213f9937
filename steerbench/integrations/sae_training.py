"""Sparse autoencoders with sae-lens: collect residual activations, train offline, load.

No pretrained SAE is reachable offline, so steerbench trains its own: residual-stream
activations (all real token positions, one layer) of chat-formatted prompts from every
shipped prompt set plus the neutral set are cached on disk, and a sae-lens
``StandardTrainingSAE`` is trained on them with sae-lens's own ``SAETrainer`` (no
HookedTransformer, no hub). Published sae-lens SAEs load through ``SAE.from_pretrained``
for users with a hub. ``import sae_lens`` is slow (~5 s), so it happens only in here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_text
from steerbench.model.adapter import ModelAdapter, default_steering_layer
from steerbench.model.chat import PromptFormat, encoded_batches, n_batches

log = logging.getLogger(__name__)

TEXT_MIX = (
    "jbb-harmful",
    "jbb-benign",
    "advbench",
    "strongreject",
    "xstest-safe",
    "xstest-unsafe",
    "neutral",
    "mmlu",
)
"""The documented training mix: every shipped prompt set plus the neutral prompts."""


@dataclass
class SAETrainingSettings:
    """Defaults sized to finish in about 10 minutes on 2 CPU cores for the default model."""

    width: int = 4096
    steps: int = 300
    batch_size: int = 2048
    lr: float = 4e-4
    l1_coefficient: float = 5.0
    max_tokens: int = 200_000
    seed: int = 0


def _sae_lens():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sae_lens
    return sae_lens


def sae_class():
    """sae-lens's ``SAE`` base class (``from_dict``, ``load_from_disk``), imported lazily."""
    return _sae_lens().SAE


def training_texts(names: tuple[str, ...] = TEXT_MIX) -> list[str]:
    from steerbench.run.prompt_sets import load_prompts

    return [r.text for name in names for r in load_prompts(name)]


def collect_residuals(
    model,
    tokenizer,
    texts: list[str],
    layer: int,
    *,
    fmt: PromptFormat | None = None,
    batch_size: int = 16,
    max_tokens: int = 200_000,
    progress: bool = True,
) -> torch.Tensor:
    """resid_post[layer] at every real (non-padding) token: [n_tokens, d_model] in bf16."""
    adapter = ModelAdapter.from_model(model)
    fmt = fmt or PromptFormat()
    device = next(model.parameters()).device
    chunks: list[torch.Tensor] = []
    total = 0
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        captured["x"] = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    handle = adapter.layers[layer].register_forward_hook(hook)
    try:
        with torch.inference_mode():
            for _, encoded in tqdm(
                encoded_batches(tokenizer, texts, fmt, batch_size, device),
                total=n_batches(len(texts), batch_size),
                desc="activations",
                unit="batch",
                disable=not progress,
                leave=False,
            ):
                with contextlib.suppress(_StopForward):
                    adapter.backbone(**encoded, use_cache=False)
                mask = encoded["attention_mask"].bool()
                chunks.append(captured["x"][mask].to(torch.bfloat16).cpu())
                total += chunks[-1].shape[0]
                if total >= max_tokens:
                    break
    finally:
        handle.remove()
    return torch.cat(chunks)[:max_tokens]


class _StopForward(Exception):
    """Raised by the capture hook: layers after the SAE's layer need not run."""


ACTIVATIONS = "activations.safetensors"
SOURCE = "activations.json"
"""Beside the cached activations: what they were captured from (``activation_source``)."""


def activation_source(
    loaded, layer: int, fmt: PromptFormat, max_tokens: int, texts: tuple[str, ...] = TEXT_MIX
) -> dict[str, Any]:
    """Everything cached activations depend on: a cache is reused only when all of it
    matches (a local model by its resolved directory, so another working directory or a
    different model under the same relative path never passes for it)."""
    model = loaded.name
    if Path(model).exists():
        model = str(Path(model).resolve())
    return {
        "model": model,
        "revision": loaded.revision,
        "dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
        "layer": layer,
        "texts": list(texts),
        "prompt_format": asdict(fmt),
        "max_tokens": max_tokens,
    }


def cache_residuals(directory: Path, activations: torch.Tensor, source: dict[str, Any]) -> None:
    """Write the activations and, after them, what they were captured from: an interrupted
    write leaves activations without a source, which are recaptured, never reused."""
    from safetensors.torch import save

    from steerbench.files import atomic_write_bytes

    (directory / SOURCE).unlink(missing_ok=True)
    payload = save({"activations": activations.contiguous()}, metadata={"meta": json.dumps(source)})
    atomic_write_bytes(directory / ACTIVATIONS, payload)
    atomic_write_text(directory / SOURCE, json.dumps(source, indent=1) + "\n")


def load_cached_residuals(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(path)["activations"]


def _stored_source(path: Path) -> dict[str, Any] | None:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def cached_residuals(directory: Path, source: dict[str, Any]) -> torch.Tensor | None:
    """The activations cached in ``directory`` if they were captured from ``source``; None
    (and the reason logged) when there are none or they come from something else."""
    cache = directory / ACTIVATIONS
    if not cache.is_file():
        return None
    stored = _stored_source(directory / SOURCE)
    if stored is None:
        log.info("Recapturing activations: %s has no readable %s beside it", cache, SOURCE)
        return None
    changed = [key for key in source if stored.get(key) != source[key]]
    if changed:
        differences = "; ".join(f"{k} {stored.get(k)!r} (now {source[k]!r})" for k in changed)
        log.info("Recapturing activations: those cached in %s differ in %s", cache, differences)
        return None
    activations = load_cached_residuals(cache)
    log.info("Reusing %d cached activations from %s", len(activations), cache)
    return activations


def training_residuals(
    loaded, layer: int, fmt: PromptFormat, max_tokens: int, directory: Path
) -> torch.Tensor:
    """The training mix's activations at ``layer``: from ``directory``'s cache when they
    were captured from the same model, layer, format, mix and token count, else captured
    now and cached there."""
    source = activation_source(loaded, layer, fmt, max_tokens)
    activations = cached_residuals(directory, source)
    if activations is None:
        activations = collect_residuals(
            loaded.model, loaded.tokenizer, training_texts(), layer, fmt=fmt, max_tokens=max_tokens
        )
        cache_residuals(directory, activations, source)
    return activations


def _batches(activations: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        for index in torch.randperm(len(activations), generator=generator).split(batch_size):
            if len(index) == batch_size:
                yield activations[index].float()


def quality_report(sae, activations: torch.Tensor, n: int = 8192) -> dict[str, float]:
    """Reconstruction MSE, explained variance, L0 and dead-feature fraction on held data."""
    x = activations[-n:].float().to(sae.W_enc.device)
    with torch.no_grad():
        features = sae.encode(x)
        reconstruction = sae.decode(features)
    mse = float(((reconstruction - x) ** 2).mean())
    variance = float(((x - x.mean(0)) ** 2).mean())
    return {
        "mse": mse,
        "explained_variance": 1 - mse / variance,
        "l0": float((features > 0).float().sum(-1).mean()),
        "dead_fraction": float(((features > 0).sum(0) == 0).float().mean()),
    }


def train_sae(
    activations: torch.Tensor,
    settings: SAETrainingSettings,
    *,
    hook_name: str,
    model_name: str,
    progress: bool = True,
):
    """Train a sae-lens StandardTrainingSAE on cached activations; returns (sae, report)."""
    lens = _sae_lens()
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(settings.seed)
    d_in = activations.shape[1]
    holdout = min(len(activations) // 10, 8192)
    train, held = activations[:-holdout], activations[-holdout:]
    batch = min(settings.batch_size, len(train))
    sae_config = lens.StandardTrainingSAEConfig(
        d_in=d_in,
        d_sae=settings.width,
        l1_coefficient=settings.l1_coefficient,
        l1_warm_up_steps=max(1, settings.steps // 10),
    )
    sae_config.metadata.hook_name = hook_name
    sae_config.metadata.model_name = model_name
    sae = lens.StandardTrainingSAE(sae_config)
    trainer_config = SAETrainerConfig(
        total_training_samples=settings.steps * batch,
        train_batch_size_samples=batch,
        lr=settings.lr,
        lr_end=settings.lr / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=max(1, settings.steps // 20),
        dead_feature_window=settings.steps,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        save_final_checkpoint=False,
        device="cuda" if torch.cuda.is_available() else "cpu",  # batches move there per step
    )
    start = time.perf_counter()
    trainer = SAETrainer(
        cfg=trainer_config, sae=sae, data_provider=_batches(train, batch, settings.seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained = trainer.fit()
    report = quality_report(trained, held)
    report["train_seconds"] = time.perf_counter() - start
    report["train_tokens"] = len(train)
    return trained, report


def save_sae(
    sae, directory: Path, report: dict[str, Any], settings: SAETrainingSettings, layer: int
) -> None:
    sae.save_inference_model(directory)
    atomic_write_text(
        directory / "steerbench_sae.json",
        json.dumps({"layer": layer, "report": report, "settings": asdict(settings)}, indent=1),
    )


def load_sae(path: str | None = None, release: str | None = None, sae_id: str | None = None):
    """An inference SAE from a directory saved by sae-lens, or a published release."""
    lens = _sae_lens()
    if path:
        if not (Path(path) / "cfg.json").is_file():
            raise SteerbenchError(
                f"{path} is not a sae-lens SAE directory (no cfg.json); "
                f"train one with `steerbench sae train --out DIR`"
            )
        return lens.SAE.load_from_disk(path)
    if release and sae_id:
        try:
            return lens.SAE.from_pretrained(release, sae_id)
        except Exception as err:
            raise SteerbenchError(
                f"could not load SAE {release}/{sae_id} ({err}); use a local directory with --sae"
            ) from err
    raise SteerbenchError("no SAE given: pass --sae DIR or --sae-release and --sae-id")


def sae_layer(sae, default: int) -> int:
    """The residual layer an SAE reads, from its hook name (``resid_post.L`` or
    TransformerLens ``blocks.L.hook_resid_post``), else ``default``."""
    name = getattr(sae.cfg.metadata, "hook_name", None) or ""
    for part in name.replace("blocks.", "").split("."):
        if part.isdigit():
            return int(part)
    return default


def default_training_layer(n_layers: int) -> int:
    return default_steering_layer(n_layers)


def check_matches(sae, adapter: ModelAdapter, layer: int) -> None:
    if sae.cfg.d_in != adapter.d_model:
        raise SteerbenchError(
            f"SAE d_in {sae.cfg.d_in} does not match the model's d_model {adapter.d_model}; "
            f"use an SAE trained on this model"
        )
    if not 0 <= layer < adapter.n_layers:
        raise SteerbenchError(f"SAE layer {layer} is outside the model's 0..{adapter.n_layers - 1}")
