"""A lexical judge: TF-IDF of the response (word 1-2-grams) and a logistic regression. It is
the validation report's baseline, and a feature the trained judge's head may add to the
judge model's read (the two see different things: words against a model's reading). Stored
as its vocabulary, idf and weights (JSON, no pickle)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

NGRAMS = (1, 2)
MAX_FEATURES = 20_000


def _vectorizer(vocabulary: dict[str, int] | None = None) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        ngram_range=NGRAMS,
        min_df=2,
        sublinear_tf=True,
        max_features=MAX_FEATURES,
        vocabulary=vocabulary,
    )


@dataclass
class LexicalScorer:
    """A fitted TF-IDF + logistic regression, as plain arrays."""

    terms: list[str]
    idf: np.ndarray
    coef: np.ndarray
    intercept: float

    @cached_property
    def _fitted_vectorizer(self) -> Any:  # built once per scorer, not per call
        vectorizer = _vectorizer({term: i for i, term in enumerate(self.terms)})
        vectorizer.idf_ = self.idf
        return vectorizer

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """The regression's log-odds of helps for each text."""
        return self._fitted_vectorizer.transform(list(texts)) @ self.coef + self.intercept

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(texts)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": self.terms,
            "idf": [float(f"{v:.6g}") for v in self.idf],
            "coef": [float(f"{v:.6g}") for v in self.coef],
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LexicalScorer:
        return cls(
            list(data["terms"]),
            np.asarray(data["idf"], dtype=np.float64),
            np.asarray(data["coef"], dtype=np.float64),
            float(data["intercept"]),
        )


def fit_lexical(texts: Sequence[str], helps: Sequence[bool], seed: int = 0) -> LexicalScorer:
    """Fit on ``texts`` (balanced classes, sklearn's default L2)."""
    from sklearn.linear_model import LogisticRegression

    vectorizer = _vectorizer()
    x = vectorizer.fit_transform(list(texts))
    model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    model.fit(x, list(helps))
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    return LexicalScorer(terms, vectorizer.idf_, model.coef_[0], float(model.intercept_[0]))


def out_of_fold_logits(
    texts: Sequence[str], helps: Sequence[bool], groups: Sequence[str], folds: int, seed: int = 0
) -> np.ndarray:
    """Each text's log-odds from a lexical judge fitted without its group (its prompt): the
    value a head may be trained on without learning the lexical judge's own training fit."""
    from sklearn.model_selection import GroupKFold

    texts, labels = list(texts), np.asarray(helps, dtype=bool)
    out = np.zeros(len(texts))
    for fit, held in GroupKFold(n_splits=folds).split(texts, labels, groups):
        scorer = fit_lexical([texts[i] for i in fit], labels[fit].tolist(), seed)
        out[held] = scorer.logits([texts[i] for i in held])
    return out
