"""Loading models: built-in names, Hugging Face ids, local directories and GGUF files.

Built-in names load the converted copy kept by the weight store
(``steerbench.model.weights``); everything else goes through ``from_pretrained``, exactly
as a transformers user expects. The store's names are re-exported here, where plugins
written for ``steerbench.models`` import them.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerbench.errors import SteerbenchError
from steerbench.model.device import resolve_device, resolve_dtype
from steerbench.model.weights import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    MANIFEST,
    QUICK_MODEL,
    VERIFIED,
    BuiltinModel,
    assemble_gguf,
    cache_dir,
    converted_dir,
    ensure_builtin,
    is_cached,
    is_installed,
    remove_stale_conversions,
    user_cache_root,
    verify_converted,
    write_manifest,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "MANIFEST",
    "QUICK_MODEL",
    "VERIFIED",
    "BuiltinModel",
    "LoadedModel",
    "assemble_gguf",
    "cache_dir",
    "check_model_spec",
    "converted_dir",
    "ensure_builtin",
    "is_cached",
    "is_installed",
    "load_model",
    "remove_stale_conversions",
    "unknown_model_message",
    "user_cache_root",
    "verify_converted",
    "write_manifest",
]

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model, its tokenizer and where they came from (recorded with every result)."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    source: str
    revision: str | None
    load_seconds: float

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def check_model_spec(spec: str, revision: str | None = None) -> str:
    """Where ``spec`` loads from ("builtin", "gguf", "directory" or "hub"), checked without
    reading any weights, so a model that cannot load stops a run before minutes of work."""
    path = Path(spec).expanduser()
    if spec in BUILTIN_MODELS:
        builtin = BUILTIN_MODELS[spec]
        if not is_cached(builtin) and not is_installed(builtin):
            raise SteerbenchError(
                f"built-in model {spec!r} is not installed; install it with: {builtin.install_hint}"
            )
        return "builtin"
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SteerbenchError(f"GGUF file {spec!r} does not exist; check the path")
        return "gguf"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SteerbenchError(
                f"directory {spec!r} has no config.json; point --model at a directory "
                f"written by save_pretrained"
            )
        return "directory"
    if "/" in spec and not spec.startswith((".", "/", "~")):
        if not _in_hub_cache(spec, revision) and not _hub_reachable():
            raise SteerbenchError(
                f"could not load {spec!r}: it is not in the local Hugging Face cache and the "
                f"hub cannot be reached; use a built-in name or a local directory"
            )
        return "hub"
    raise SteerbenchError(unknown_model_message(spec))


def _in_hub_cache(repo_id: str, revision: str | None) -> bool:
    """True if a model's config is already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return isinstance(found, str)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection to the hub (honouring HF_HUB_OFFLINE and HF_ENDPOINT), so an
    offline machine gets its answer in seconds, not after the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def unknown_model_message(spec: str) -> str:
    names = ", ".join(BUILTIN_MODELS)
    return (
        f"unknown model {spec!r}: use a built-in name ({names}), a local model directory, "
        f"a .gguf file, or a Hugging Face model id available offline (see `steerbench models`)"
    )


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    device: str | None = "auto",
    dtype: str | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
) -> LoadedModel:
    """Load ``spec`` (built-in name, directory, .gguf path or hub id) for inference.

    Only safetensors weights load unless ``allow_pickle_weights`` (a ``.bin`` file is a
    pickle, which can run code), and custom model code only with ``trust_remote_code``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    start = time.perf_counter()
    source = check_model_spec(spec, revision)
    kwargs: dict = {"trust_remote_code": trust_remote_code}
    path = Path(spec).expanduser()
    location: str | Path
    if source == "builtin":
        builtin = BUILTIN_MODELS[spec]
        location, revision = ensure_builtin(builtin), builtin.gguf_sha256
    elif source == "gguf":
        location = path.parent
        kwargs["gguf_file"] = path.name
    elif source == "directory":
        location = path
    else:
        location = spec
        if revision:
            kwargs["revision"] = revision

    # Several GPUs and no explicit device: let accelerate spread the layers over them.
    spread = (device or "auto") == "auto" and torch.cuda.device_count() > 1
    model_kwargs = {**kwargs, "device_map": "auto"} if spread else dict(kwargs)
    if source in ("directory", "hub") and not allow_pickle_weights:
        model_kwargs["use_safetensors"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch_dtype, **model_kwargs
        )
    except OSError as err:
        if model_kwargs.get("use_safetensors") and "safetensors" in str(err).lower():
            raise SteerbenchError(
                f"{spec!r} has no safetensors weights (only .bin pickle files, which can run "
                f"code when loaded); convert them to safetensors, or pass "
                f"--allow-pickle-weights if you trust the files"
            ) from err
        if source == "hub":
            raise SteerbenchError(
                f"could not load {spec!r} from the Hugging Face hub or its local cache "
                f"({str(err).splitlines()[0]}); use a built-in name or a local directory"
            ) from err
        raise SteerbenchError(f"could not load model from {spec!r}: {err}") from err
    except ValueError as err:
        raise SteerbenchError(f"could not load model {spec!r}: {str(err).splitlines()[0]}") from err
    if not spread:
        model.to(torch_device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    seconds = time.perf_counter() - start
    log.info("Loaded %s (%s, %s, %s) in %.1f s", spec, source, torch_dtype, torch_device, seconds)
    return LoadedModel(model, tokenizer, spec, source, revision, seconds)
