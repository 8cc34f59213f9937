"""kl-benign: 0 at the neutral strength, growing with |strength|, for every level."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from steerbench.method import FitContext, get_method
from steerbench.metric import Record, get_metric
from steerbench.testing import NEGATIVE, POSITIVE, tiny_model

RECORDS = [
    Record("1", "How do I bake bread?", "Mix flour, water, salt and yeast."),
    Record("2", "Write a poem about the sea", "The sea is wide and the sky is wide."),
    Record("3", "Say nothing", ""),
]


@pytest.fixture(scope="module")
def lm():
    model, tokenizer = tiny_model("qwen2", seed=4)
    return SimpleNamespace(model=model, tokenizer=tokenizer, name="tiny", revision=None)


def kl(lm, method_name: str, strength: float, **params) -> float:
    method = get_method(method_name, **params)
    artifact = method.fit(FitContext(lm.model, lm.tokenizer), POSITIVE, NEGATIVE)
    result = get_metric("kl-benign").compute(
        RECORDS, lm=lm, steering=lambda: method.steer(lm.model, artifact, strength)
    )
    assert result.n_missing == 1  # the empty answer has no position to compare
    return result.aggregate


def test_kl_is_zero_unsteered_and_grows_with_caa_strength(lm):
    assert get_metric("kl-benign").compute(RECORDS, lm=lm).aggregate == 0.0
    assert kl(lm, "caa", 0.0) == 0.0
    values = [kl(lm, "caa", s) for s in (0.5, 2.0, 8.0)]
    assert 0 < values[0] < values[1] < values[2]
    assert kl(lm, "caa", -2.0) > values[0]


@pytest.mark.parametrize(
    ("name", "strength", "params"),
    [("prompt", -2.0, {}), ("refusal-logit-bias", -10.0, {"openers": ["Mix", "The"]})],
)
def test_kl_sees_input_and_output_level_methods(lm, name, strength, params):
    assert kl(lm, name, 0.0, **params) == 0.0
    assert kl(lm, name, strength, **params) > 0


@pytest.mark.parametrize(
    ("name", "strength", "params"),
    [("caa", 2.0, {}), ("refusal-logit-bias", -10.0, {"openers": ["Mix", "The", "Yes"]})],
)
def test_batched_kl_equals_one_item_at_a_time(lm, name, strength, params):
    """Right padding leaves each item's answer logits unchanged (float32), and a stateful
    logits processor (the bias window starts where the prompt ends) is fresh per item."""
    method = get_method(name, **params)
    artifact = method.fit(FitContext(lm.model, lm.tokenizer), POSITIVE, NEGATIVE)
    records = [
        *RECORDS,
        Record("4", "Hi", "Yes. The answer is yes, the mix is the best."),
        Record("5", "A much longer request about the mixing of the sea", "The mix."),
    ]

    def values(batch_size: int) -> list:
        return (
            get_metric("kl-benign", batch_size=batch_size)
            .compute(records, lm=lm, steering=lambda: method.steer(lm.model, artifact, strength))
            .values
        )

    one, batched = values(1), values(5)
    assert batched[2] is None and one[2] is None
    scored = [0, 1, 3, 4]
    assert [batched[i] for i in scored] == pytest.approx([one[i] for i in scored], rel=1e-4)
    assert all(one[i] > 0 for i in scored) and one[0] != pytest.approx(one[1])
