"""The results directory: writable (``check_writable``), and written by one run at a time
(``results_lock``)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_text, process_alive

LOCK_FILE = ".steerbench.lock"
LOCK_HOLDER = ".steerbench.lock.json"


@contextmanager
def results_lock(results: Path) -> Iterator[None]:
    """Hold the results directory for one run at a time.

    An OS file lock (released by the kernel when its process dies, also on SIGKILL), so a
    killed run never leaves a stale lock; a second run stops at once with one line that
    names the holder instead of computing every cell a second time."""
    from filelock import FileLock, Timeout

    results.mkdir(parents=True, exist_ok=True)
    lock = FileLock(results / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SteerbenchError(
            f"results directory {results} is in use by {_lock_holder(results)}; wait for that "
            f"run to finish or choose another --results DIR"
        ) from None
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(
                os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)
            ),
        }
        atomic_write_text(results / LOCK_HOLDER, json.dumps(holder) + "\n")
        yield
    finally:
        lock.release()


def _lock_holder(results: Path, wait: float = 2.0) -> str:
    """Who holds the lock, from the note it writes right after taking it (waiting briefly
    for that note when both runs started at the same moment)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads((results / LOCK_HOLDER).read_text())
            pid = int(info["pid"])
            if info["host"] != socket.gethostname() or (pid != os.getpid() and process_alive(pid)):
                return (
                    f"`{info['command']}` (pid {info['pid']} on {info['host']}, "
                    f"since {info['since']})"
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            return "another steerbench process"
        time.sleep(0.05)


def check_writable(results: Path) -> None:
    """One line before any work, not a traceback after the first cell, where ``results``
    cannot be written."""
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SteerbenchError(
            f"results directory {results} is not writable ({err.strerror}); choose another "
            f"with --results DIR"
        ) from err
