"""The vendored data files: the top-level ``datasets/`` folder (installed as
``steerbench.datasets``), every file checked against ``datasets/SHA256SUMS`` on first use,
so results are comparable across users and a modified file cannot go unnoticed."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from steerbench.errors import SteerbenchError


@functools.cache
def datasets_root() -> Path:
    """The ``datasets/`` folder: inside an installed wheel, or the source tree's own.

    It holds data only and has no ``__init__.py`` (it would shadow Hugging Face
    ``datasets``), so it is found by location rather than imported.
    """
    package = Path(__file__).resolve().parents[1]  # steerbench/
    for candidate in (package / "datasets", package.parent / "datasets"):
        if (candidate / "SHA256SUMS").is_file():
            return candidate
    raise SteerbenchError("steerbench's datasets folder is missing; reinstall steerbench")


@functools.cache
def expected_checksums() -> dict[str, str]:
    sums = {}
    for line in (datasets_root() / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def verified_path(relative: str) -> Path:
    """Path of a vendored file after checking its sha256 (once per process)."""
    path = datasets_root() / relative
    expected = expected_checksums().get(relative)
    if expected is None:
        raise SteerbenchError(f"datasets/{relative} has no entry in datasets/SHA256SUMS")
    if not path.is_file():
        raise SteerbenchError(
            f"datasets/{relative} is missing; reinstall steerbench or restore the file from git"
        )
    actual = sha256_file(path)
    if actual != expected:
        raise SteerbenchError(
            f"datasets/{relative} does not match its checksum (modified or truncated); "
            f"restore it with `git checkout -- datasets/{relative}` or reinstall steerbench"
        )
    return path
