"""Fitting the trained judge (``steerbench validate strongreject --retrain``): a seeded,
label-stratified sample of GPTFuzz's train split and the whole training part of the
project's labelled steered outputs (``labelled_sets.TRAIN_LIMITS``), each read once by the
judge model. The combiner's inputs, the hidden-state groups and their regularisation are
chosen by cross-validated AUROC on those pairs alone, folds grouped by prompt, every input
of the combiner out of fold (never a held-out set); the head is then refitted on all of
them and written with the hashes of its data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from steerbench.judge.features import FeatureSpec
from steerbench.judge.head import JudgeHead, group_columns, head_file
from steerbench.run.data_files import datasets_root, sha256_file, verified_path
from steerbench.studies.labelled_sets import (
    PROJECT_SET,
    SPLIT_SEED,
    LabelledSet,
    labelled_sets,
    lexical_training,
    read_features,
    training_pairs,
)

log = logging.getLogger(__name__)

TRAIN_FILES = ("gptfuzz/train.csv", "gptfuzz/question_list.csv", PROJECT_SET)
HIDDEN_GROUPS = (("mean",), ("last", "mean"))
"""The hidden-state part's feature groups tried: the residual stream averaged over the
question, and with the answer position's too."""
REGULARISATION = (0.001, 0.003, 0.01, 0.03)
INPUT_SETS = (
    ("grade",),
    ("lexical",),
    ("hidden",),
    ("lexical", "grade"),
    ("hidden", "grade"),
    ("hidden", "lexical"),
    ("hidden", "lexical", "grade"),
)
"""The combiner's inputs tried (``steerbench.judge.head.INPUTS``)."""
FOLDS = 5


@dataclass(frozen=True)
class Training:
    """The head's training pairs as arrays: the judge's read, the labels, the prompt (fold
    group) and source set of each pair, and the lexical judge's out-of-fold log-odds."""

    read: np.ndarray
    helps: np.ndarray
    groups: list[str]
    sources: list[str]
    lexical: np.ndarray


def out_of_fold(model: Any, x: np.ndarray, data: Training) -> np.ndarray:
    """``model``'s log-odds of each pair from a fit without its prompt's fold."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    folds = GroupKFold(n_splits=FOLDS)
    return cross_val_predict(
        model, x, data.helps, groups=data.groups, cv=folds, method="decision_function"
    )


def per_source_auroc(scores: np.ndarray, data: Training) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    sources = np.asarray(data.sources)
    return {
        name: float(roc_auc_score(data.helps[sources == name], scores[sources == name]))
        for name in dict.fromkeys(data.sources)
    }


def choose_settings(
    data: Training, spec: FeatureSpec, width: int, seed: int = SPLIT_SEED
) -> tuple[tuple[str, ...], tuple[str, ...], float | None, list[dict[str, Any]]]:
    """The combiner inputs, hidden-state groups and regularisation whose stacked judge has
    the best cross-validated AUROC, averaged over the training sources (GPTFuzz's sample
    and the project's steered outputs count alike; folds grouped by prompt; every input of
    the combiner out of fold). Returns them with every candidate's scores."""
    from steerbench.judge.head import combiner_model, expected_grade, hidden_model

    combiner = combiner_model(seed)
    fixed = {"lexical": data.lexical, "grade": expected_grade(data.read)}
    hidden_runs: list[tuple[tuple[str, ...], float | None, np.ndarray | None]] = [((), None, None)]
    for groups in HIDDEN_GROUPS:
        x = data.read[:, group_columns(groups, len(spec.depths), width)].astype(np.float64)
        for strength in REGULARISATION:
            hidden_runs.append(
                (groups, strength, out_of_fold(hidden_model(strength, seed), x, data))
            )
    table: list[dict[str, Any]] = []
    for run_groups, run_strength, hidden in hidden_runs:
        for inputs in INPUT_SETS:
            if ("hidden" in inputs) != (hidden is not None):
                continue
            columns = {**fixed, **({"hidden": hidden} if hidden is not None else {})}
            x = np.column_stack([columns[name] for name in inputs])
            auroc = per_source_auroc(out_of_fold(combiner, x, data), data)
            row = {
                "inputs": "+".join(inputs),
                "hidden": "+".join(run_groups) if run_groups else "-",
                "C": run_strength,
                "cv_auroc": float(np.mean(list(auroc.values()))),
                **auroc,
            }
            table.append(row)
            log.info("%s: cross-validated AUROC %s", row, auroc)
    best = max(table, key=lambda row: row["cv_auroc"])
    chosen = tuple(best["hidden"].split("+")) if best["hidden"] != "-" else ()
    return tuple(best["inputs"].split("+")), chosen, best["C"], table


def training_data(
    lm: Any, spec: FeatureSpec, batch_size: int, seed: int
) -> tuple[Training, list[LabelledSet], Any]:
    """The head's training arrays, the sets they came from, and the lexical judge fitted on
    all of its data (what the head reads at run time)."""
    from steerbench.judge.lexical import fit_lexical, out_of_fold_logits

    pairs = training_pairs()
    read = np.concatenate([read_features(lm, p, spec, batch_size=batch_size) for p in pairs])
    lexical_sets = lexical_training(labelled_sets())
    texts = [r for p in lexical_sets for r in p.responses]
    lexical_helps = [h for p in lexical_sets for h in p.helps]
    lexical_groups = [g for p in lexical_sets for g in p.groups]
    oof = out_of_fold_logits(texts, lexical_helps, lexical_groups, FOLDS, seed)
    # one fold per prompt, so a pair's duplicates share their out-of-fold value
    by_pair = {(g, r): v for g, r, v in zip(lexical_groups, texts, oof)}
    data = Training(
        read=read,
        helps=np.asarray([h for p in pairs for h in p.helps]),
        groups=[g for p in pairs for g in p.groups],
        sources=[p.name for p in pairs for _ in range(len(p))],
        lexical=np.asarray([by_pair[(g, r)] for p in pairs for g, r in zip(p.groups, p.responses)]),
    )
    return data, pairs, fit_lexical(texts, lexical_helps, seed)


def train_head(
    lm: Any, *, seed: int = SPLIT_SEED, batch_size: int = 8, spec: FeatureSpec | None = None
) -> tuple[JudgeHead, list[dict[str, Any]]]:
    """The head for judge ``lm`` fitted on the training pairs, and the selection table: the
    chosen hidden-state part refitted on every pair, the combiner fitted on every pair's
    out-of-fold inputs (what it will meet: log-odds of answers its parts did not see)."""
    from steerbench.judge.head import expected_grade, fit_combiner, fit_hidden, hidden_model

    spec = spec or FeatureSpec()
    data, pairs, lexical = training_data(lm, spec, batch_size, seed)
    width = lm.model.config.hidden_size
    inputs, groups, strength, table = choose_settings(data, spec, width, seed)
    columns: dict[str, np.ndarray] = {"lexical": data.lexical, "grade": expected_grade(data.read)}
    hidden = None
    if "hidden" in inputs:
        assert strength is not None
        x = data.read[:, group_columns(groups, len(spec.depths), width)].astype(np.float64)
        columns["hidden"] = out_of_fold(hidden_model(strength, seed), x, data)
        hidden = fit_hidden(data.read, data.helps, groups, strength, spec, width, seed)
    weights, intercept = fit_combiner(
        np.column_stack([columns[name] for name in inputs]), data.helps, seed
    )
    head = JudgeHead(
        judge=lm.name,
        spec=spec,
        width=width,
        inputs=inputs,
        combiner=weights,
        combiner_intercept=intercept,
        hidden=hidden,
        lexical=lexical if "lexical" in inputs else None,
        regularisation=strength,
        seed=seed,
        trained_on={
            "pairs": {p.name: len(p) for p in pairs},
            "lexical_pairs": {p.name: len(p) for p in lexical_training(labelled_sets())},
            "sha256": {name: sha256_file(verified_path(name)) for name in TRAIN_FILES},
            "revision": lm.revision,
        },
    )
    return head, table


def write_head(head: JudgeHead, path: Path | None = None) -> Path:
    """Write ``head`` (atomically) to ``path``, by default as the shipped head of its judge,
    whose SHA256SUMS line is then updated too."""
    from steerbench.files import atomic_write_text

    root = datasets_root()
    target = path or root / head_file(head.judge)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, head.to_json())
    if target.resolve().is_relative_to(root.resolve()):
        relative = target.resolve().relative_to(root.resolve()).as_posix()
        sums = root / "SHA256SUMS"
        line = f"{sha256_file(target)}  {relative}"
        lines = sums.read_text().splitlines()
        names = [entry.split(maxsplit=1)[1].lstrip("*") if entry.strip() else "" for entry in lines]
        if relative in names:
            lines[names.index(relative)] = line
        else:
            lines.append(line)
        atomic_write_text(sums, "\n".join(lines) + "\n")
        from steerbench.run.data_files import expected_checksums

        expected_checksums.cache_clear()
        verified_path.cache_clear()
    return target
