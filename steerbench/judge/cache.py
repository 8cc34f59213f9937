"""Judge answers kept so that nothing is judged twice, owned by whoever judges.

An answer is keyed by sha256 of the JSON list [judge, prompt, response] (the judge's name,
its mode included). With a directory it is also a ``<key>.json`` file holding
``{"text": answer}`` there, so reruns cost no judge calls; this scheme is the on-disk format
and stays as it is (existing cache directories are read as they are). In memory, answers
are kept only for a judge that runs locally, per weights object: two models may share a
name, and a weak reference lets a freed model's answers go with it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from steerbench.files import atomic_write_text


def cache_key(judge: str, prompt: str, response: str) -> str:
    """The key of ``judge``'s answer about ``response`` to ``prompt``."""
    payload = json.dumps([judge, prompt, response], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """Answers in memory for as long as this object lives, and under ``directory`` if given.

    ``scope`` (the judge's weights object, or None) says whose memory an answer is kept in;
    answers without one are kept on disk only."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: WeakKeyDictionary[Any, dict[str, str]] = WeakKeyDictionary()

    def get(self, key: str, scope: Any = None) -> str | None:
        """The stored answer, or None (memory first, then the directory)."""
        if scope is not None and key in self._memory.get(scope, {}):
            return self._memory[scope][key]
        if self.directory is None:
            return None
        path = self.directory / f"{key}.json"
        return json.loads(path.read_text())["text"] if path.is_file() else None

    def put(self, key: str, text: str, scope: Any = None) -> None:
        """Keep ``text`` in ``scope``'s memory (if any) and in the directory (if any)."""
        if scope is not None:
            self._memory.setdefault(scope, {})[key] = text
        if self.directory is not None:
            atomic_write_text(self.directory / f"{key}.json", json.dumps({"text": text}))
