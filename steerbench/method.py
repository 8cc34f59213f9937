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
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from steerbench import __version__
from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_bytes, atomic_write_text
from steerbench.model.chat import PromptFormat
from steerbench.registry import Registry, build_config

log = logging.getLogger(__name__)

UNSTEERED = "none"
"""The method label of the unsteered model (results files store it: its value never changes;
a config may not name a method so)."""

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
        """Read an artifact; anything unreadable is one line that says to fit it again."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        meta_path = directory / ARTIFACT_JSON
        if not meta_path.is_file() or not (directory / ARTIFACT_TENSORS).is_file():
            raise SteerbenchError(
                f"{directory} is not a steerbench artifact (needs {ARTIFACT_JSON} and "
                f"{ARTIFACT_TENSORS}); create one with `steerbench discover`"
            )
        refit = "delete it and fit it again with `steerbench discover`"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise SteerbenchError(f"{meta_path} is not valid JSON ({err}); {refit}") from err
        if not isinstance(meta, dict) or not isinstance(meta.get("method"), str):
            raise SteerbenchError(f"{meta_path} names no method; {refit}")
        try:
            tensors = load_file(directory / ARTIFACT_TENSORS)
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise SteerbenchError(
                f"{directory / ARTIFACT_TENSORS} is damaged ({str(err).splitlines()[0]}); {refit}"
            ) from err
        return cls(meta.pop("method"), tensors, meta)


@dataclass(frozen=True)
class TensorSpec:
    """What one tensor of a method's artifact must be, checked before any model is touched.

    ``kind``: "float" (finite floating point) or "index" (integers in [0, metadata[bound])).
    ``shape``: one entry per dimension, each a metadata key (``n_layers``, ``d_mlp``,
    ``d_model``) or a symbol that every tensor of the artifact using it must agree on."""

    kind: str = "float"
    shape: tuple[str, ...] | None = None
    bound: str | None = None


MODEL_DIMENSIONS = ("n_layers", "d_mlp", "d_model")


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
        from steerbench.model.capture import Activations, capture_last_token

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
    level: ClassVar[str] = "model"
    """Where it acts: "input" (the prompt), "model" (weights, activations) or "output" (the
    decoding); see ``steerbench.model.levels``."""
    is_control: ClassVar[bool] = False
    """A control, not a method (random neurons): shown as a reference row on leaderboards."""
    neutral_strength: ClassVar[float] = 0.0
    default_strengths: ClassVar[tuple[float, ...]] = ()
    strength_domain: tuple[float, float] = (-math.inf, math.inf)
    """The strengths ``steer`` accepts (an instance may set its own from its Config)."""
    artifact_tensors: ClassVar[dict[str, TensorSpec]] = {}
    """The tensors ``apply`` reads: validated (presence, dtype, range, shape) by ``steer``."""

    @dataclass
    class Config:
        pass

    config: Any
    """This method's ``Config`` instance (a subclass may annotate ``config: Config`` so that
    a type checker sees its fields)."""

    def __init__(self, **hyperparameters: Any) -> None:
        self.config = build_config(
            self.Config, hyperparameters, f"hyper-parameter(s) for method {self.name!r}"
        )

    def hyperparameters(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    @abstractmethod
    def fit(self, ctx: FitContext, positive: Sequence[str], negative: Sequence[str]) -> Artifact:
        """Compute the method's artifact from contrasting prompt sets."""

    def steer(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        """Context manager: the model is steered inside, restored exactly on exit.

        Does the checks every method needs, once, here: the artifact is this method's, its
        tensors are what ``artifact_tensors`` declares, it was fitted on a model of this
        shape, the strength is finite and in the domain; the neutral strength is the
        unchanged model. Then ``apply`` intervenes."""
        self.check_artifact(artifact)
        self.check_strength(strength)
        check_model_matches(artifact, model)
        if strength == self.neutral_strength:
            return nullcontext()
        return self.apply(model, artifact, strength)

    def apply(
        self, model: torch.nn.Module, artifact: Artifact, strength: float
    ) -> AbstractContextManager[None]:
        """The intervention (artifact and strength already checked, never neutral)."""
        raise NotImplementedError(f"method {self.name!r} implements neither apply nor steer")

    def check_model(self, adapter: Any) -> None:
        """Refuse a model this configuration cannot work on (a layer it does not have...)
        right after loading, before any fitting; ``adapter``: a ``ModelAdapter``."""
        return None

    def summary(self, artifact: Artifact) -> list[str]:
        """Human-readable lines printed by ``steerbench discover``."""
        return [f"{k}: {v}" for k, v in artifact.metadata.get("summary", {}).items()]

    # -- helpers for subclasses -----------------------------------------------------------

    def check_strength(self, strength: float) -> None:
        low, high = self.strength_domain
        if (
            isinstance(strength, bool)
            or not isinstance(strength, (int, float))
            or not math.isfinite(strength)
            or not low <= strength <= high
        ):
            raise SteerbenchError(
                f"strength {strength!r} is outside the domain of {self.name!r} "
                f"(finite numbers in [{low}, {high}]; neutral {self.neutral_strength})"
            )

    def check_artifact(self, artifact: Artifact) -> None:
        """The artifact is this method's and holds the tensors ``apply`` reads, with the
        dtypes, ranges and shapes it declares (a tampered artifact is one line, never a
        traceback or a silently different intervention)."""
        if artifact.method != self.name:
            raise SteerbenchError(
                f"artifact was made by method {artifact.method!r}, not {self.name!r}; "
                f"pass --method {artifact.method} or fit a new artifact"
            )
        refit = "fit it again with `steerbench discover`"
        meta = artifact.metadata
        sizes: dict[str, int] = {}
        for key in MODEL_DIMENSIONS:
            value = meta.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise SteerbenchError(f"artifact metadata {key} = {value!r} is not a size; {refit}")
            if value is not None:
                sizes[key] = value
        for name, spec in self.artifact_tensors.items():
            tensor = artifact.tensors.get(name)
            if tensor is None:
                raise SteerbenchError(f"{self.name} artifact has no tensor {name!r}; {refit}")
            problem = _tensor_problem(tensor, spec, sizes, meta)
            if problem:
                raise SteerbenchError(f"{self.name} artifact tensor {name!r} {problem}; {refit}")

    def make_artifact(
        self,
        ctx: FitContext,
        positive: Sequence[str],
        negative: Sequence[str],
        tensors: dict[str, torch.Tensor],
        **extra: Any,
    ) -> Artifact:
        from steerbench.model.adapter import ModelAdapter

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


def _tensor_problem(
    tensor: torch.Tensor, spec: TensorSpec, sizes: dict[str, int], meta: dict[str, Any]
) -> str | None:
    if spec.kind == "index":
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            return f"should hold integer indices, not {tensor.dtype}"
        bound = meta.get(spec.bound) if spec.bound else None
        if tensor.numel() and (int(tensor.min()) < 0 or (bound and int(tensor.max()) >= bound)):
            return f"has indices outside [0, {bound}) ({spec.bound})"
    elif not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
        return "should hold finite floating-point numbers"
    if spec.shape is not None:
        if tensor.dim() != len(spec.shape):
            return f"has shape {tuple(tensor.shape)}, expected {len(spec.shape)} dimensions"
        for size, want in zip(tensor.shape, spec.shape):
            expected = sizes.setdefault(want, size)
            if size != expected:
                return f"has shape {tuple(tensor.shape)}, expected {want} = {expected}"
    return None


def check_model_matches(artifact: Artifact, model: torch.nn.Module) -> None:
    """Refuse an artifact fitted on a model of another shape."""
    from steerbench.model.adapter import ModelAdapter

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


METHODS: Registry[SteeringMethod] = Registry(
    "method", "steerbench.methods", "steerbench.methods", base=SteeringMethod
)


def get_method(name: str, **hyperparameters: Any) -> SteeringMethod:
    return METHODS.get(name)(**hyperparameters)


def steering_from_cli(args: Any, loaded: Any) -> AbstractContextManager[None]:
    """``--method/--artifact/--strength`` of ``steerbench generate`` as a context manager."""
    if not args.artifact:
        raise SteerbenchError("--method needs --artifact DIR (made by `steerbench discover`)")
    artifact = Artifact.load(args.artifact)
    hyperparameters = artifact.metadata.get("hyperparameters", {})
    if not isinstance(hyperparameters, dict):
        raise SteerbenchError(f"{args.artifact}: hyperparameters are not a mapping; fit it again")
    method = get_method(args.method, **hyperparameters)
    strength = method.neutral_strength if args.strength is None else args.strength
    fitted_on = (artifact.metadata.get("model"), artifact.metadata.get("model_revision"))
    if fitted_on != (loaded.name, loaded.revision):
        log.warning(
            "the artifact was fitted on %s (revision %s), not on %s (revision %s): a model of "
            "the same shape is not the same model, so its neurons and directions may mean "
            "nothing here",
            *fitted_on,
            loaded.name,
            loaded.revision,
        )
    return method.steer(loaded.model, artifact, strength)
