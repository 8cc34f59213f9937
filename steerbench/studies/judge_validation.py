"""How far a harm judge can be trusted, on human labels it never saw (``steerbench validate
strongreject``).

Three labelled sets, each read as "does the answer give the harmful help asked for":

- ``gptfuzz-evaluate``: GPTFuzz's answers to its questions 80-99 (jailbroken = helps); its
  questions 0-79 (``gptfuzz-train``) are what a judge may be trained on;
- ``xstest-unsafe``: XSTest v2's answers of five models to its 200 unsafe prompts (full
  compliance = helps);
- ``project-test``: a third of the project's own labelled steered outputs
  (``datasets/judge_validation``; full or partial = helps), split by prompt with a fixed
  seed; the other two thirds (``project-train``) may be trained on.

Classifiers: the keyword classifier ("compliance" = helps), a TF-IDF + logistic-regression
baseline trained on ``gptfuzz-train`` + ``project-train`` (what a lexical judge learns with
no model at all), and with ``--model`` each local judge's digit grade alone and the
``strongreject`` metric as runs compute it (keyword gate, then the grade). Each row: AUROC
with a percentile-bootstrap 95 % interval, agreement at the metric's fixed threshold and
the confusion counts.
"""

from __future__ import annotations

import csv
import glob
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from steerbench.run.data_files import datasets_root, verified_path
from steerbench.run.prompt_sets import read_jsonl

VALIDATED_METRIC = "strongreject"
"""The metric whose judges this validates (``steerbench validate strongreject``)."""
KEYWORD_METRIC = "refusal"
"""Its keyword gate: the refusal metric's classifier."""
PROJECT_SET = "judge_validation/judge_validation.jsonl"
PROJECT_HELPS = ("full", "partial")
TEST_FRACTION = 1 / 3
SPLIT_SEED = 0
BOOTSTRAP = 1000
REPORTED_SETS = ("gptfuzz-evaluate", "xstest-unsafe", "project-test")


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


def tfidf_baseline(train: Sequence[LabelledSet]) -> Callable[[LabelledSet], list[float]]:
    """A lexical judge: TF-IDF of the response (word 1-2-grams) and logistic regression,
    fitted on ``train``; returns the scorer (P(helps) of each pair)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = [text for s in train for text in s.responses]
    labels = [label for s in train for label in s.helps]
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50_000),
        LogisticRegression(max_iter=2000, class_weight="balanced", random_state=SPLIT_SEED),
    )
    model.fit(texts, labels)
    return lambda pairs: [float(p) for p in model.predict_proba(pairs.responses)[:, 1]]


def auroc_interval(helps: Sequence[bool], scores: Sequence[float]) -> tuple[float, float, float]:
    """AUROC and its percentile-bootstrap 95 % interval (resampling pairs, seeded; NaN
    where the pairs hold one label only)."""
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(helps, dtype=bool), np.asarray(scores, dtype=float)
    if y.all() or not y.any():  # one label only: no ranking to measure
        return math.nan, math.nan, math.nan
    value = float(roc_auc_score(y, s))
    rng = np.random.default_rng(SPLIT_SEED)
    draws = []
    for _ in range(BOOTSTRAP):
        index = rng.integers(0, len(y), len(y))
        if y[index].all() or not y[index].any():
            continue
        draws.append(roc_auc_score(y[index], s[index]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return value, float(low), float(high)


def report_row(classifier: str, pairs: LabelledSet, scores: Sequence[float]) -> dict[str, Any]:
    """One classifier on one set: AUROC [95 % CI], agreement at the threshold, counts."""
    from steerbench.judge.agreement import agreement

    value, low, high = auroc_interval(pairs.helps, scores)
    return {
        "set": pairs.name,
        **agreement(classifier, scores, pairs.helps),
        "helps": sum(pairs.helps),
        "auroc": value,
        "auroc_low": low,
        "auroc_high": high,
    }


def keyword_scores(pairs: LabelledSet) -> list[float]:
    """1 where the refusal metric's keyword classifier labels the answer "compliance"."""
    from steerbench.metric import Record, get_metric

    records = [
        Record(prompt=p, response=r, id=str(i))
        for i, (p, r) in enumerate(zip(pairs.prompts, pairs.responses))
    ]
    labels = get_metric(KEYWORD_METRIC).compute(records).columns["refusal_label"]
    return [float(label == "compliance") for label in labels]


def judge_scores(lm: Any, pairs: LabelledSet, batch_size: int) -> list[float]:
    """A local judge's digit grade of each pair, as a score in [0, 1]."""
    from steerbench.judge.local import LocalJudge
    from steerbench.judge.prompts import grade_message, grade_score

    messages = [grade_message(p, r) for p, r in zip(pairs.prompts, pairs.responses)]
    return [grade_score(g) for g in LocalJudge(lm, 1, batch_size).grade(messages)]


def validation_report(
    judges: Sequence[Any] = (),
    *,
    limit: int | None = None,
    batch_size: int = 8,
    sets: Sequence[str] = REPORTED_SETS,
) -> list[dict[str, Any]]:
    """Every classifier on each of ``sets`` (``limit``: a seeded sample of each set's pairs
    for the model judges, whose cost is a forward pass per pair)."""
    labelled = labelled_sets()
    tfidf = tfidf_baseline([labelled["gptfuzz-train"], labelled["project-train"]])
    rows = []
    for name in sets:
        pairs = labelled[name]
        keyword = keyword_scores(pairs)
        rows.append(report_row("keyword classifier (compliance = helps)", pairs, keyword))
        rows.append(report_row("TF-IDF + logistic regression (baseline)", pairs, tfidf(pairs)))
        sample = pairs.head(limit)
        gate = keyword_scores(sample)
        for lm in judges:
            alone = judge_scores(lm, sample, batch_size)
            rows.append(report_row(f"{lm.name}: digit grade alone", sample, alone))
            gated = [score if ok else 0.0 for score, ok in zip(alone, gate)]
            rows.append(report_row(f"strongreject (keywords, then {lm.name})", sample, gated))
    return rows
