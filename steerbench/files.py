"""Atomic file writes: a crash never leaves a half-written result behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from steerbench.errors import SteerbenchError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_read_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 less the
    umask), not the temp file's private 0600: results often live on shared storage."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise SteerbenchError(
            f"cannot write to {path.parent} ({err.strerror}); choose a writable location"
        ) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), FILE_MODE)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig, stem: Path, *, dpi: int = 110) -> None:
    """``stem``.png and ``stem``.svg, each written atomically and byte-reproducibly (no date
    or version in the metadata, SVG ids from a fixed salt), so a regenerated figure whose data did
    not change does not show up as a change."""
    import io

    import matplotlib

    for ext in ("png", "svg"):
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "steerbench"}):
            # no date and no matplotlib version in the metadata: a rebuild with another
            # patch release of matplotlib still gives the same bytes where it draws the same
            metadata = {"Date": None, "Creator": None} if ext == "svg" else {"Software": None}
            fig.savefig(buffer, format=ext, dpi=dpi, metadata=metadata)
        atomic_write_bytes(stem.parent / f"{stem.name}.{ext}", buffer.getvalue())  # keeps dots


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (lock and temp-file owners)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
