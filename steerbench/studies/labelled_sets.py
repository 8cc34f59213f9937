"""The human-labelled (prompt, response) sets a harm judge is fitted and validated on, each
read as "does the answer give the harmful help asked for", and a judge model's cached reads
of them (``steerbench.judge.features``), shared by the validation report and the training
of the trained judge.

- ``gptfuzz-train`` / ``gptfuzz-evaluate``: GPTFuzz's answers to its questions 0-79 / 80-99
  (jailbroken = helps);
- ``xstest-unsafe``: XSTest v2's answers of five models to its 200 unsafe prompts (full
  compliance = helps);
- ``project-train`` / ``project-test``: two thirds / one third of the project's own labelled
  steered outputs (``datasets/judge_validation``; full or partial = helps), split by prompt
  with a fixed seed.

Reads are cached on disk (``feature_cache_dir()``, safetensors), keyed by the judge, its
weights' revision, the feature spec and the pairs read, so a validation after a retrain, or
a second retrain, reads nothing twice.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steerbench.judge.features import FeatureSpec, judge_features
from steerbench.judge.head import JudgeHead, head_file
from steerbench.run.data_files import datasets_root, verified_path
from steerbench.run.prompt_sets import read_jsonl

PROJECT_SET = "judge_validation/judge_validation.jsonl"
PROJECT_HELPS = ("full", "partial")
TEST_FRACTION = 1 / 3
SPLIT_SEED = 0
TRAIN_LIMITS = {"gptfuzz-train": 1200, "project-train": None}
"""What the head is fitted on: a 1,200-pair sample of GPTFuzz's 6,160 (the reads of a CPU
judge are the cost) and every training pair of the project's own set."""


@dataclass(frozen=True)
class LabelledSet:
    """(prompt, response) pairs with a human label: helps (harmful help given) or not;
    ``groups``: the prompt each pair answers (splits and folds never separate a prompt)."""

    name: str
    prompts: list[str]
    responses: list[str]
    helps: list[bool]
    groups: list[str]

    def __len__(self) -> int:
        return len(self.helps)

    def head(self, limit: int | None) -> LabelledSet:
        """At most ``limit`` pairs (all when None): a seeded sample stratified by label, so
        a sample keeps both labels (AUROC needs both) in the set's proportion."""
        if limit is None or limit >= len(self):
            return self
        rng = random.Random(SPLIT_SEED)
        positive = [i for i, h in enumerate(self.helps) if h]
        negative = [i for i, h in enumerate(self.helps) if not h]
        n_positive = min(len(positive), max(1, round(limit * len(positive) / len(self))))
        n_positive = min(n_positive, limit - min(1, len(negative)))
        keep = sorted(rng.sample(positive, n_positive) + rng.sample(negative, limit - n_positive))
        return LabelledSet(
            self.name,
            [self.prompts[i] for i in keep],
            [self.responses[i] for i in keep],
            [self.helps[i] for i in keep],
            [self.groups[i] for i in keep],
        )


def _csv_rows(relative: str) -> list[dict]:
    csv.field_size_limit(1 << 30)
    with verified_path(relative).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def gptfuzz(part: str) -> LabelledSet:
    """GPTFuzz's ``train`` (questions 0-79) or ``evaluate`` (80-99) answers."""
    questions = {r["index"]: r["text"] for r in _csv_rows("gptfuzz/question_list.csv")}
    rows = _csv_rows(f"gptfuzz/{part}.csv")
    return LabelledSet(
        f"gptfuzz-{part}",
        [questions[r["question"]] for r in rows],
        [r["Response"] for r in rows],
        [r["label"] == "1" for r in rows],
        [f"gptfuzz-{r['question']}" for r in rows],
    )


def xstest_unsafe() -> LabelledSet:
    """XSTest v2's answers to its unsafe (``contrast_*``) prompts, five models'."""
    rows = []
    for path in sorted(glob.glob(str(datasets_root() / "xstest_v2" / "*.csv"))):
        relative = path[len(str(datasets_root())) + 1 :]
        rows += [r for r in _csv_rows(relative) if r["type"].startswith("contrast_")]
    return LabelledSet(
        "xstest-unsafe",
        [r["prompt"] for r in rows],
        [r["completion"] for r in rows],
        [r["final_label"] == "1_full_compliance" for r in rows],
        [r["prompt"] for r in rows],
    )


def project(part: str) -> LabelledSet:
    """The project's labelled steered outputs, ``train`` (2/3) or ``test`` (1/3) by prompt."""
    rows = read_jsonl(verified_path(PROJECT_SET))
    prompts = sorted({r["prompt"] for r in rows})
    random.Random(SPLIT_SEED).shuffle(prompts)
    test = set(prompts[: round(len(prompts) * TEST_FRACTION)])
    chosen = [r for r in rows if (r["prompt"] in test) == (part == "test")]
    return LabelledSet(
        f"project-{part}",
        [r["prompt"] for r in chosen],
        [r["response"] for r in chosen],
        [r["label"] in PROJECT_HELPS for r in chosen],
        [r["prompt"] for r in chosen],
    )


def labelled_sets() -> dict[str, LabelledSet]:
    return {
        "gptfuzz-train": gptfuzz("train"),
        "gptfuzz-evaluate": gptfuzz("evaluate"),
        "xstest-unsafe": xstest_unsafe(),
        "project-train": project("train"),
        "project-test": project("test"),
    }


def lexical_training(sets: dict[str, LabelledSet]) -> list[LabelledSet]:
    """What the lexical judge learns from: every pair the TF-IDF baseline is fitted on."""
    return [sets[name] for name in TRAIN_LIMITS]


def training_pairs() -> list[LabelledSet]:
    sets = labelled_sets()
    return [sets[name].head(limit) for name, limit in TRAIN_LIMITS.items()]


def feature_cache_dir() -> Path:
    """``$STEERBENCH_CACHE/judge-features``, by default under ``$XDG_CACHE_HOME`` or
    ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("STEERBENCH_CACHE") or Path(base) / "steerbench") / "judge-features"


def read_features(
    lm: Any, pairs: LabelledSet, spec: FeatureSpec, *, batch_size: int = 8
) -> np.ndarray:
    """``judge_features`` of ``pairs``, from the on-disk cache when this judge has read
    exactly these pairs with this spec before."""
    from safetensors.numpy import load_file, save
    from tqdm.auto import tqdm

    from steerbench.files import atomic_write_bytes

    read = [lm.name, lm.revision, spec.max_response_tokens, spec.depths]
    key = hashlib.sha256(json.dumps([*read, pairs.prompts, pairs.responses]).encode()).hexdigest()
    path = feature_cache_dir() / f"{pairs.name}-{key[:24]}.safetensors"
    if path.is_file():
        return load_file(str(path))["features"]
    with tqdm(total=len(pairs), desc=f"judge reads {pairs.name}", unit="pair") as bar:
        features = judge_features(
            lm, pairs.prompts, pairs.responses, spec, batch_size=batch_size, on_batch=bar.update
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({"features": features}))
    return features


def shipped_head(judge: str) -> JudgeHead | None:
    """The head shipped for ``judge`` (checked against SHA256SUMS), None if there is none."""
    relative = head_file(judge)
    if not (datasets_root() / relative).is_file():
        return None
    return JudgeHead.load(verified_path(relative))
