"""TruthfulQA's 817 multiple-choice questions (Lin et al. 2022) as data: the questions the
MC1 / MC2 metrics read, their seeded discovery / validation / evaluation split, and the
contrast pairs a method is fitted on when TruthfulQA is a task (ITI's setting: the question
answered truly against answered falsely, read at the end of the answer)."""

from __future__ import annotations

import functools
import json
import random

from steerbench.run.data_files import verified_path
from steerbench.run.prompt_files import PromptRecord
from steerbench.run.splits import split_ids

MC_FILE = "truthfulqa/mc_task.json"
TRUTHFULQA = "truthfulqa"
"""Its name among a config's behaviours (``steerbench.run.behaviour_tasks``)."""
CONTRAST_SETS = {"truthfulqa-true": True, "truthfulqa-false": False}
"""Prompt sets of the contrast pairs: each question with the reply pre-filled with its MC1
true answer, or with its first false one."""


@functools.cache
def load_questions() -> list[dict]:
    """The 817 questions: ``id``, ``question``, ``mc1`` and ``mc2`` as (choice, is_true)."""
    rows = json.loads(verified_path(MC_FILE).read_text(encoding="utf-8"))
    return [
        {
            "id": f"truthfulqa-{index:03d}",
            "question": row["question"],
            "mc1": [(text, bool(label)) for text, label in row["mc1_targets"].items()],
            "mc2": [(text, bool(label)) for text, label in row["mc2_targets"].items()],
        }
        for index, row in enumerate(rows)
    ]


def pick_questions(n: int | None, seed: int) -> list[dict]:
    """A seeded subset of all 817 (TruthfulQA as a side effect: nothing is fitted on it)."""
    questions = load_questions()
    if n is None or n >= len(questions):
        return list(questions)
    chosen = sorted(random.Random(seed).sample(range(len(questions)), n))
    return [questions[i] for i in chosen]


def split_questions(split: str, *, seed: int, n: int | None = None) -> list[dict]:
    """One split's questions (the prompt sets' 40/20/40 rule), ``n`` by their seeded draw:
    TruthfulQA as a task, fitted on its discovery split and reported on its evaluation one."""
    by_id = {q["id"]: q for q in load_questions()}
    return [by_id[i] for i in split_ids(list(by_id), split, seed=seed, n=n)]


def contrast_prompts(name: str) -> list[PromptRecord] | None:
    """The records of ``truthfulqa-true`` / ``truthfulqa-false`` (None for other names)."""
    from steerbench.model.chat import with_reply

    if name not in CONTRAST_SETS:
        return None
    truthful = CONTRAST_SETS[name]
    return [
        PromptRecord(
            id=q["id"],
            text=with_reply(
                q["question"], next(a for a, is_true in q["mc1"] if is_true == truthful)
            ),
            source=name,
        )
        for q in load_questions()
    ]
