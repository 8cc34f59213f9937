"""Behaviour items in CAA's A/B format: a question with lettered options, the answer that
matches the behaviour and the one that does not (Rimsky et al. 2024).

The seven CAA behaviours ship in ``datasets/caa/<behaviour>/`` (``generate.json``: the
contrast pairs steering vectors are fitted on; ``test_ab.json``: 50 held-out items), and
any user file in the same format (a JSON list or JSONL of records with ``question``,
``answer_matching_behavior``, ``answer_not_matching_behavior``) loads the same way, so a
result can be checked on items outside the shipped sets.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from steerbench.errors import SteerbenchError
from steerbench.run.data_files import verified_path
from steerbench.run.prompt_files import PromptRecord, read_jsonl
from steerbench.run.splits import split_ids

BEHAVIOURS = (
    "coordinate-other-ais",
    "corrigible-neutral-HHH",
    "hallucination",
    "myopic-reward",
    "refusal",
    "survival-instinct",
    "sycophancy",
)
BEHAVIOUR_FILES = {"test": "test_ab.json", "generate": "generate.json"}
"""A shipped behaviour's item sets: CAA's 50 held-out A/B items, and its contrast pairs."""
AB_LETTERS = ("A", "B")
_ANSWER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")
FIELDS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")


@dataclass(frozen=True)
class BehaviourItem:
    """One A/B question; ``matching`` / ``other`` are option letters ("A", "B", "C"...)."""

    id: str
    question: str
    matching: str
    other: str

    @property
    def is_ab(self) -> bool:
        """Whether both answers are (A) or (B): the items the A/B metric can score."""
        return {self.matching, self.other} == set(AB_LETTERS)


def _letter(value: object, where: str) -> str:
    if isinstance(value, list) and len(value) == 1:  # some CAA-style files wrap it in a list
        value = value[0]
    match = _ANSWER.match(value) if isinstance(value, str) else None
    if match is None:
        raise SteerbenchError(
            f"{where}: an answer must be an option letter such as '(A)', got {value!r}"
        )
    return match.group(1)


def parse_items(rows: list, source: str, prefix: str) -> list[BehaviourItem]:
    """Records in CAA's A/B format as items; ids ``<prefix>-<index>`` unless a row has one."""
    items = []
    for index, row in enumerate(rows):
        where = f"{source} item {index}"
        if not isinstance(row, dict) or any(k not in row for k in FIELDS):
            raise SteerbenchError(
                f"{where}: an A/B item needs the fields {', '.join(FIELDS)} (CAA's format)"
            )
        items.append(
            BehaviourItem(
                id=str(row.get("id") or f"{prefix}-{index:04d}"),
                question=str(row["question"]),
                matching=_letter(row["answer_matching_behavior"], where),
                other=_letter(row["answer_not_matching_behavior"], where),
            )
        )
    if not items:
        raise SteerbenchError(f"{source} holds no A/B items")
    return items


def read_item_file(path: Path) -> list:
    """A JSON list or a JSONL file of records, with a one-line error for anything else."""
    if not path.is_file():
        raise SteerbenchError(
            f"A/B item file {str(path)!r} does not exist; pass a file or a behaviour "
            f"({', '.join(BEHAVIOURS)})"
        )
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SteerbenchError(f"{path}: not valid JSON ({err}); give a JSON list or JSONL") from err
    if not isinstance(rows, list):
        raise SteerbenchError(f"{path}: expected a JSON list of A/B records")
    return rows


def load_behaviour_items(spec: str) -> list[BehaviourItem]:
    """``behaviour`` (its held-out test items), ``behaviour:generate`` (its contrast pairs)
    or a path to a user file in CAA's format."""
    name, _, part = spec.partition(":")
    if name in BEHAVIOURS:
        part = part or "test"
        if part not in BEHAVIOUR_FILES:
            raise SteerbenchError(
                f"unknown item set {part!r} of behaviour {name!r}; use one of "
                f"{', '.join(BEHAVIOUR_FILES)}"
            )
        path = verified_path(f"caa/{name}/{BEHAVIOUR_FILES[part]}")
        return parse_items(json.loads(path.read_text(encoding="utf-8")), spec, f"{name}-{part}")
    path = Path(spec).expanduser()
    if path.suffix or path.exists():
        return parse_items(read_item_file(path), str(path), path.stem)
    raise SteerbenchError(
        f"unknown behaviour {spec!r}; use one of {', '.join(BEHAVIOURS)} (optionally "
        f":test or :generate) or a JSON / JSONL file of A/B items"
    )


CONTRAST_SET = re.compile(r"^caa-(?P<behaviour>.+)-(?P<side>matching|other)$")
"""Prompt-set names of a behaviour's contrast pairs: ``caa-<behaviour>-matching`` (each
generate item's question with the reply pre-filled with "(" and the matching letter) and
``caa-<behaviour>-other`` (the other letter), CAA's positive and negative sides."""


def contrast_set_name(behaviour: str, side: str) -> str:
    return f"caa-{behaviour}-{side}"


def split_items(
    items: list[BehaviourItem], split: str, *, seed: int, n: int | None = None
) -> list[BehaviourItem]:
    """The A/B items of one seeded discovery / validation / evaluation split of ``items``
    (40/20/40, the prompt sets' rule on the same A/B items ``contrast_prompts`` lists, so a
    behaviour's contrast pairs and its validation items never overlap), ``n`` of them by
    the prompt sets' seeded draw."""
    by_id = {item.id: item for item in items if item.is_ab}
    return [by_id[i] for i in split_ids(list(by_id), split, seed=seed, n=n)]


def contrast_prompts(name: str) -> list[PromptRecord] | None:
    """The records of a contrast prompt set (``CONTRAST_SET``), None for other names: each
    an A/B generate item as a prompt whose reply is pre-filled up to its answer letter,
    where CAA reads the activations. Only A/B items (both sides have a letter to read)."""
    from steerbench.model.chat import with_reply

    match = CONTRAST_SET.match(name)
    if match is None or match["behaviour"] not in BEHAVIOURS:
        return None
    side = match["side"]
    return [
        PromptRecord(
            id=item.id,
            text=with_reply(
                item.question, "(" + (item.matching if side == "matching" else item.other)
            ),
            source=name,
        )
        for item in load_behaviour_items(f"{match['behaviour']}:generate")
        if item.is_ab
    ]
