"""The ``SteeringMethod`` interface, its artifacts, and the method registry.

A method is *fitted* once from positive and negative prompts (``fit -> Artifact``), the
artifact is saved and loaded (safetensors + JSON), and it is *applied* with a scalar
strength inside ``with method.steer(model, artifact, strength):``, which restores the model
exactly on exit, also when the body raises.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from steerbench import __version__
from steerbench.errors import SteerbenchError
from steerbench.io import atomic_write_bytes, atomic_write_text
from steerbench.prompts import PromptFormat
from steerbench.registry import Registry, build_config

ARTIFACT_JSON = "artifact.json"
ARTIFACT_TENSORS = "tensors.safetensors"


def prompt_hash(prompts: Sequence[str]) -> str:
    """Stable fingerprint of a prompt list (order matters), stored with every artifact."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.encode("utf-8") + b"\0")
    return digest.hexdigest()


@dataclass
class Artifact:
    """What ``fit`` produces: named tensors plus JSON-able metadata."""

    method: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save

        directory = Path(directory)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        atomic_write_bytes(directory / ARTIFACT_TENSORS, save(tensors))
        meta = {"method": self.method, **self.metadata}
        atomic_write_text(directory / ARTIFACT_JSON, json.dumps(meta, indent=1) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Artifact:
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path = directory / ARTIFACT_JSON
        if not meta_path.is_file() or not (directory / ARTIFACT_TENSORS).is_file():
            raise SteerbenchError(
                f"{directory} is not a steerbench artifact (needs {ARTIFACT_JSON} and "
                f"{ARTIFACT_TENSORS}); create one with `steerbench discover`"
            )
        meta = json.loads(meta_path.read_text())
        return cls(meta.pop("method"), load_file(directory / ARTIFACT_TENSORS), meta)


@dataclass
class FitContext:
    """Everything ``fit`` needs besides the prompts: the model and how to feed it."""

    model: torch.nn.Module
    tokenizer: Any
    fmt: PromptFormat = field(default_factory=PromptFormat)
    batch_size: int = 16
    model_name: str = "unknown"
    model_revision: str | None = None
    progress: bool = False
    _rows: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    def activations(self, prompts: Sequence[str]) -> Any:
        """Last-token activations of both site kinds, each prompt captured once.

        Methods fitted on the same prompts (CNA, its random control, CAA) share one pass,
        and fits on subsets or resamples of captured prompts (the stability analyses) cost
        no forward pass at all. Prompts not seen yet are captured together, in the order
        given, so a list's batches are the same as in a fresh context.
        """
        from steerbench.capture import Activations, capture_last_token

        if not prompts:
            raise SteerbenchError("no prompts to capture activations from; check the prompt set")
        missing = [p for p in dict.fromkeys(prompts) if p not in self._rows]
        if missing:
            captured = capture_last_token(
                self.model,
                self.tokenizer,
                missing,
                fmt=self.fmt,
                batch_size=self.batch_size,
                progress=self.progress,
            )
            for i, prompt in enumerate(missing):
                self._rows[prompt] = {kind: rows[i] for kind, rows in captured.by_kind.items()}
        kinds = self._rows[prompts[0]].keys()
        return Activations(
            {kind: torch.stack([self._rows[p][kind] for p in prompts]) for kind in kinds}
        )


class SteeringMethod(ABC):
    """Base class of every steering method.

    Subclasses set ``description``, ``neutral_strength`` (the strength that leaves the model
    unchanged), ``default_strengths`` (the sweep a benchmark runs), ``strength_domain`` and
    ``Config`` (a dataclass of hyper-parameters), and implement ``fit`` and ``steer``.
    """

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    neutral_strength: ClassVar[float] = 0.0
    default_strengths: ClassVar[tuple[float, ...]] = ()
    strength_domain: ClassVar[tuple[float, float]] = (-math.inf, math.inf)

    @dataclass
    class Config:
        pass

    def __init__(self, **hyperparameters: Any) -> None:
        self.config = build_config(
            self.Config, hyperparameters, f"hyper-parameter(s) for method {self.name!r}"
        )

    def hyperparameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @abstractmethod
    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        """Compute the method's artifact from contrasting prompt sets."""

    @abstractmethod
    def steer(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        """Context manager: the model is steered inside, restored exactly on exit."""

    def summary(self, artifact: Artifact) -> list[str]:
        """Human-readable lines printed by ``steerbench discover``."""
        return [f"{k}: {v}" for k, v in artifact.metadata.get("summary", {}).items()]

    # -- helpers for subclasses -----------------------------------------------------------

    def check_strength(self, strength: float) -> None:
        low, high = self.strength_domain
        if not (low <= strength <= high) or math.isnan(strength):
            raise SteerbenchError(
                f"strength {strength} is outside the domain of {self.name!r} "
                f"([{low}, {high}]; neutral {self.neutral_strength})"
            )

    def check_artifact(self, artifact: Artifact) -> None:
        if artifact.method != self.name:
            raise SteerbenchError(
                f"artifact was made by method {artifact.method!r}, not {self.name!r}; "
                f"pass --method {artifact.method} or fit a new artifact"
            )

    def make_artifact(
        self,
        ctx: FitContext,
        positive: Sequence[str],
        negative: Sequence[str],
        tensors: dict[str, torch.Tensor],
        **extra: Any,
    ) -> Artifact:
        from steerbench.adapter import ModelAdapter

        adapter = ModelAdapter.from_model(ctx.model)
        metadata = {
            "model": ctx.model_name,
            "model_revision": ctx.model_revision,
            "n_layers": adapter.n_layers,
            "d_mlp": adapter.d_mlp,
            "d_model": adapter.d_model,
            "hyperparameters": self.hyperparameters(),
            "prompt_format": dataclasses.asdict(ctx.fmt),
            "positive_sha256": prompt_hash(positive),
            "negative_sha256": prompt_hash(negative),
            "n_positive": len(positive),
            "n_negative": len(negative),
            "steerbench_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **extra,
        }
        return Artifact(self.name, tensors, metadata)


def check_model_matches(artifact: Artifact, model: torch.nn.Module) -> None:
    """Refuse an artifact fitted on a model of another shape."""
    from steerbench.adapter import ModelAdapter

    adapter = ModelAdapter.from_model(model)
    expected = (
        artifact.metadata.get("n_layers"),
        artifact.metadata.get("d_mlp"),
        artifact.metadata.get("d_model"),
    )
    actual = (adapter.n_layers, adapter.d_mlp, adapter.d_model)
    if expected != actual:
        raise SteerbenchError(
            f"artifact was fitted on {artifact.metadata.get('model')!r} with (layers, d_mlp, "
            f"d_model) = {expected}, but this model has {actual}; fit it on this model"
        )


METHODS: Registry[SteeringMethod] = Registry("method", "steerbench.methods", "steerbench.methods")


def get_method(name: str, **hyperparameters: Any) -> SteeringMethod:
    return METHODS.get(name)(**hyperparameters)


def steering_from_cli(args, loaded) -> Iterator[None]:
    """``--method/--artifact/--strength`` of ``steerbench generate`` as a context manager."""
    if not args.artifact:
        raise SteerbenchError("--method needs --artifact DIR (made by `steerbench discover`)")
    artifact = Artifact.load(args.artifact)
    method = get_method(args.method, **artifact.metadata.get("hyperparameters", {}))
    method.check_artifact(artifact)
    strength = method.neutral_strength if args.strength is None else args.strength
    check_model_matches(artifact, loaded.model)
    return method.steer(loaded.model, artifact, strength)
