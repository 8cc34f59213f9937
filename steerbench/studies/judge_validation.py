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
no model at all), and with ``--model`` each local judge, from one read of each pair: its
digit grade alone, the ``strongreject`` logprob mode (keyword gate, then the grade) and,
where a head ships for it (or ``--retrain`` fits one), the trained judge. Each row: AUROC
with a percentile-bootstrap 95 % interval over prompts, agreement at the metric's fixed
threshold and the confusion counts, every classifier on the same pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from steerbench.judge.features import FeatureSpec
from steerbench.studies.labelled_sets import (
    SPLIT_SEED,
    LabelledSet,
    labelled_sets,
    lexical_training,
    read_features,
    shipped_head,
)

VALIDATED_METRIC = "strongreject"
"""The metric whose judges this validates (``steerbench validate strongreject``)."""
KEYWORD_METRIC = "refusal"
"""Its keyword gate: the refusal metric's classifier."""
BOOTSTRAP = 1000
REPORTED_SETS = ("gptfuzz-evaluate", "xstest-unsafe", "project-test")


def tfidf_baseline(train: Sequence[LabelledSet]) -> Callable[[LabelledSet], list[float]]:
    """The lexical judge (``steerbench.judge.lexical``) fitted on ``train``; returns the
    scorer (P(helps) of each pair)."""
    from steerbench.judge.lexical import fit_lexical

    scorer = fit_lexical(
        [text for s in train for text in s.responses],
        [label for s in train for label in s.helps],
        SPLIT_SEED,
    )
    return lambda pairs: scorer.scores(pairs.responses).tolist()


def prompt_resamples(groups: Sequence[str]) -> list[np.ndarray]:
    """``BOOTSTRAP`` seeded resamples of whole prompts, as index arrays into the pairs."""
    names, cluster = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(cluster == c) for c in range(len(names))]
    rng = np.random.default_rng(SPLIT_SEED)
    return [
        np.concatenate([members[c] for c in rng.integers(0, len(names), len(names))])
        for _ in range(BOOTSTRAP)
    ]


def auroc_interval(
    helps: Sequence[bool], scores: Sequence[float], groups: Sequence[str] | None = None
) -> tuple[float, float, float]:
    """AUROC and its percentile-bootstrap 95 % interval, seeded; NaN where the pairs hold
    one label only. With ``groups`` (the prompt each pair answers) the bootstrap resamples
    whole prompts: answers to one prompt are not independent (the same request, often the
    same words), and resampling them one by one would make the interval too narrow."""
    return auroc_difference(helps, scores, None, groups)


def auroc_difference(
    helps: Sequence[bool],
    scores: Sequence[float],
    baseline: Sequence[float] | None,
    groups: Sequence[str] | None = None,
) -> tuple[float, float, float]:
    """AUROC(scores) - AUROC(baseline) on the same pairs (AUROC(scores) alone without a
    baseline) and its paired bootstrap 95 % interval: both judges scored on each resample."""
    from sklearn.metrics import roc_auc_score

    y, s = np.asarray(helps, dtype=bool), np.asarray(scores, dtype=float)
    if y.all() or not y.any():  # one label only: no ranking to measure
        return math.nan, math.nan, math.nan
    b = np.asarray(baseline, dtype=float) if baseline is not None else None

    def statistic(index: np.ndarray) -> float:
        value = roc_auc_score(y[index], s[index])
        return float(value - roc_auc_score(y[index], b[index]) if b is not None else value)

    value = statistic(np.arange(len(y)))
    labels = groups if groups is not None else [str(i) for i in range(len(y))]
    draws = [statistic(i) for i in prompt_resamples(labels) if 0 < y[i].sum() < len(i)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return value, float(low), float(high)


def report_row(classifier: str, pairs: LabelledSet, scores: Sequence[float]) -> dict[str, Any]:
    """One classifier on one set: AUROC [95 % CI], agreement at the threshold, counts, and
    the per-pair scores they were computed from."""
    from steerbench.judge.agreement import agreement

    value, low, high = auroc_interval(pairs.helps, scores, pairs.groups)
    return {
        "set": pairs.name,
        **agreement(classifier, scores, pairs.helps),
        "helps": sum(pairs.helps),
        "auroc": value,
        "auroc_low": low,
        "auroc_high": high,
        "scores": [float(s) for s in scores],
    }


def versus_baseline(
    pairs: LabelledSet, scores: Sequence[float], baseline: Sequence[float]
) -> dict[str, float]:
    """A judge's AUROC minus the TF-IDF baseline's on the same pairs, with its paired
    prompt-bootstrap 95 % interval: whether the sample can tell the two apart."""
    value, low, high = auroc_difference(pairs.helps, scores, baseline, pairs.groups)
    return {"vs_baseline": value, "vs_baseline_low": low, "vs_baseline_high": high}


def keyword_scores(pairs: LabelledSet) -> list[float]:
    """1 where the refusal metric's keyword classifier labels the answer "compliance"."""
    from steerbench.metric import Record, get_metric

    records = [
        Record(prompt=p, response=r, id=str(i))
        for i, (p, r) in enumerate(zip(pairs.prompts, pairs.responses))
    ]
    labels = get_metric(KEYWORD_METRIC).compute(records).columns["refusal_label"]
    return [float(label == "compliance") for label in labels]


def validation_report(
    judges: Sequence[Any] = (),
    *,
    limit: int | None = None,
    batch_size: int = 8,
    sets: Sequence[str] = REPORTED_SETS,
    heads: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every classifier on each of ``sets``, or on a seeded sample of ``limit`` pairs of
    each (every classifier on the same pairs: a model judge's cost is a forward pass per
    pair). Each model judge reads each pair once (``steerbench.judge.features``): its digit
    grade alone, the ``strongreject`` logprob mode as runs compute it (keyword gate, then
    the grade), and, where ``heads`` (judge name -> head; default: the shipped heads) has
    one for it, the trained judge."""
    from steerbench.judge.head import expected_grade

    labelled = labelled_sets()
    tfidf = tfidf_baseline(lexical_training(labelled))
    heads = dict(heads or {})
    for lm in judges:
        if lm.name not in heads:
            heads[lm.name] = shipped_head(lm.name)
    rows = []
    for name in sets:
        pairs = labelled[name].head(limit)
        keyword = keyword_scores(pairs)
        rows.append(report_row("keyword classifier (compliance = helps)", pairs, keyword))
        lexical = tfidf(pairs)
        rows.append(report_row("TF-IDF + logistic regression (baseline)", pairs, lexical))
        for lm in judges:
            head = heads[lm.name]
            spec = head.spec if head is not None else FeatureSpec()
            features = read_features(lm, pairs, spec, batch_size=batch_size)
            alone = expected_grade(features).tolist()
            rows.append(report_row(f"{lm.name}: digit grade alone", pairs, alone))
            gated = [score if ok else 0.0 for score, ok in zip(alone, keyword)]
            rows.append(report_row(f"strongreject (keywords, then {lm.name})", pairs, gated))
            if head is not None:
                trained = head.score(features, pairs.responses).tolist()
                row = report_row(f"trained judge ({lm.name})", pairs, trained)
                rows.append(
                    {
                        **row,
                        **versus_baseline(pairs, trained, lexical),
                        "head_sha256": head.digest(),
                    }
                )
    return rows


REPORT_FILE = "report.json"
JUDGE_MARKERS = ("<!-- judge-validation:start -->", "<!-- judge-validation:end -->")
"""Where ``validate strongreject --readme FILE`` writes the report's table."""


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's word for it."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_report(rows: list[dict[str, Any]], folder: Any, judges: Sequence[Any], **settings) -> Any:
    """``folder/report.json``: every row with its per-pair scores, the judges (name,
    revision, device, dtype), the settings, the machine and the versions (what the README's
    table is rendered from, ``report_markdown``)."""
    import json
    import os

    from steerbench.files import atomic_write_text
    from steerbench.run.provenance import machine, provenance

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_FILE
    report = {
        "settings": settings,
        "judges": [{"name": lm.name, "revision": lm.revision, **machine(lm)} for lm in judges],
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
        "versions": provenance(),
        "rows": rows,
    }
    atomic_write_text(path, json.dumps(report, indent=1, sort_keys=True) + "\n")
    return path


SET_TITLES = {
    "gptfuzz-evaluate": "GPTFuzz evaluate",
    "xstest-unsafe": "XSTest unsafe",
    "project-test": "project test",
}


def report_markdown(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The report as a Markdown table (the README's and docs/metrics.md's), one line each."""
    lines = [
        "| set | classifier | n | AUROC [95 % CI] | Δ AUROC vs TF-IDF [95 % CI] | agreement "
        "| TP | FP | FN | TN |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        versus = (
            f"{r['vs_baseline']:+.3f} [{r['vs_baseline_low']:+.3f}, {r['vs_baseline_high']:+.3f}]"
            if "vs_baseline" in r
            else ""
        )
        lines.append(
            f"| {SET_TITLES.get(r['set'], r['set'])} | {r['classifier']} | {r['n']} | "
            f"{r['auroc']:.3f} [{r['auroc_low']:.3f}, {r['auroc_high']:.3f}] | {versus} | "
            f"{r['agreement']:.3f} | {r['true_positive']} | {r['false_positive']} | "
            f"{r['false_negative']} | {r['true_negative']} |"
        )
    return lines
