"""Prompt files a user hands steerbench (txt, CSV, JSONL), read with one-line errors.

Kept apart from the registered prompt sets (``steerbench.run.prompt_sets``), which read
their vendored files through the same readers after checking their checksums.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from steerbench.errors import SteerbenchError

PROMPT_COLUMNS = ("prompt", "goal", "Goal", "forbidden_prompt", "text", "question")
"""The columns a CSV or JSONL prompt file may hold its prompts in, the first found used."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt with a stable id, an optional category and the set it came from."""

    id: str
    text: str
    category: str | None = None
    source: str | None = None


def read_text(path: Path) -> str:
    """A user's text file as UTF-8, or one line that says to re-save it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SteerbenchError(
            f"{path} is not UTF-8 text (byte {err.start} cannot be decoded); save it as UTF-8"
        ) from err


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per non-empty line, with the line number in any error. Lines end at
    "\n" only, as JSON Lines says: ``str.splitlines`` would also split inside a string that
    holds U+0085 or U+2028, which ``json.dumps(..., ensure_ascii=False)`` writes raw."""
    rows = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise SteerbenchError(
                    f"{path}: line {number} is not valid JSON ({err.msg}); "
                    f"JSONL needs one JSON object per line"
                ) from err
            if not isinstance(row, dict):
                raise SteerbenchError(
                    f"{path}: line {number} is a JSON {type(row).__name__}, not an object; "
                    f'JSONL needs one object per line, e.g. {{"prompt": "..."}}'
                )
            rows.append(row)
    return rows


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSONL or CSV file (by its suffix), as dicts."""
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except csv.Error as err:  # e.g. a field larger than the csv module's limit
        raise SteerbenchError(
            f"{path} is not a readable CSV file ({err}); check its quoting"
        ) from err


def _text_records(path: Path) -> list[PromptRecord]:
    """One prompt per non-blank line."""
    texts = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    return [PromptRecord(f"{path.stem}-{i:04d}", t, None, path.name) for i, t in enumerate(texts)]


def _table_records(path: Path, suffix: str) -> list[PromptRecord]:
    """The prompt column of a CSV or JSONL file; rows whose prompt is null or blank are
    skipped, a row whose prompt is not text is an error."""
    rows = read_rows(path)
    column = next((c for c in PROMPT_COLUMNS if rows and c in rows[0]), None)
    if rows and column is None:
        raise SteerbenchError(
            f"{path} has no prompt column; name one of {', '.join(PROMPT_COLUMNS)}"
        )
    records = []
    for i, row in enumerate(rows):
        text = row.get(column)
        if text is None and suffix == ".jsonl" and column not in row:
            raise SteerbenchError(f"{path}: row {i + 1} has no {column!r} key")
        if text is not None and not isinstance(text, str):
            raise SteerbenchError(
                f"{path}: row {i + 1} has a {type(text).__name__} as its {column!r}, not "
                f"text; prompts must be strings (null rows are skipped)"
            )
        category = row.get("category")
        if text and text.strip():
            records.append(
                PromptRecord(
                    id=str(row.get("id") or f"{path.stem}-{i:04d}"),
                    text=text.strip(),
                    category=None if category is None else str(category),
                    source=path.name,
                )
            )
    return records


def read_prompt_file(path: Path) -> list[PromptRecord]:
    """The prompts of an existing user file: .txt (one prompt per line), .csv or .jsonl (a
    prompt-like column, see ``PROMPT_COLUMNS``)."""
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ""):
        records = _text_records(path)
    elif suffix in (".csv", ".jsonl"):
        records = _table_records(path, suffix)
    else:
        raise SteerbenchError(
            f"unsupported prompt file type {suffix!r} for {path}; use .txt, .csv or .jsonl"
        )
    if not records:
        raise SteerbenchError(f"prompt file {path} contains no prompts")
    return records
