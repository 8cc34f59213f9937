"""Output quality = 1 - fraction of repeated word n-grams (the paper's degeneration measure).

quality = 1 - (total - unique) / total over the word n-grams of a response (default n = 4,
lower-cased ``\\w+`` words from nltk's ``RegexpTokenizer``, which needs no downloaded data).
Edge cases: a text with fewer than n words (the empty text included) has no n-gram that
could repeat, so its quality is 1.0; emptiness is the refusal metric's business (it flags
empty responses as degenerate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nltk.tokenize import RegexpTokenizer
from nltk.util import ngrams

from steerbench.metric import METRICS, Metric, MetricResult, Record
from steerbench.options import Positive

_WORDS = RegexpTokenizer(r"\w+")


def words(text: str) -> list[str]:
    return _WORDS.tokenize(text.lower())


def ngram_quality(text: str, n: int = 4) -> float:
    grams = list(ngrams(words(text), n))
    if not grams:
        return 1.0
    return 1.0 - (len(grams) - len(set(grams))) / len(grams)


@METRICS.register("quality")
class Quality(Metric):
    """1 - repeated n-gram fraction; 1.0 is fluent, low values are degenerate loops."""

    description = "1 - fraction of repeated word 4-grams (degeneration)"
    higher_is_better = True
    value_range = (0.0, 1.0)

    @dataclass
    class Config(Metric.Config):
        n: Positive = 4

    def compute(self, records: Sequence[Record], *, lm: Any = None, **context: Any) -> MetricResult:
        values = [ngram_quality(r.response, self.config.n) for r in records]
        return self.result(values)
