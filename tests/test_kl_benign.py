"""kl-benign: KL(unsteered || steered) on the unsteered model's own answers, computed once;
exact at k >= vocab, bounded below k; 0 unsteered; one steered pass per batch and cell."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from steerbench.interventions import add_to_residual
from steerbench.method import FitContext, get_method
from steerbench.metric import Record, get_metric
from steerbench.metrics import kl_benign
from steerbench.metrics.kl_benign import compress, partition_kl
from steerbench.model import generation
from steerbench.model.chat import PromptFormat, format_prompts, prompt_token_ids
from steerbench.testing import NEGATIVE, POSITIVE, tiny_model

TOKENS = 10  # answer length: short answers keep the tests fast
RECORDS = [
    Record("1", "How do I bake bread?", "the records' own responses are not read"),
    Record("2", "Write a poem about the sea", ""),
    Record("3", "Say nothing", "x"),
    Record("4", "A much longer request about the mixing of the sea and the sky", ""),
]


@pytest.fixture(scope="module")
def lm():
    model, tokenizer = tiny_model("qwen2", seed=4)
    return SimpleNamespace(model=model, tokenizer=tokenizer, name="tiny", revision=None)


FITTED: dict[str, tuple] = {}


def fitted(lm, name: str, **params):
    """The method and its artifact on the module's model, fitted once per configuration."""
    key = repr((name, sorted(params.items())))
    if key not in FITTED:
        method = get_method(name, **params)
        FITTED[key] = method, method.fit(FitContext(lm.model, lm.tokenizer), POSITIVE, NEGATIVE)
    return FITTED[key]


def kl_result(lm, name: str, strength: float, records=RECORDS, metric=None, **params):
    method, artifact = fitted(lm, name, **params)
    metric = metric or get_metric("kl-benign", max_answer_tokens=TOKENS)
    return metric.compute(
        records, lm=lm, steering=lambda: method.steer(lm.model, artifact, strength)
    )


class Counter:
    """Counts the model's forward calls and the reference generations."""

    def __init__(self, lm, monkeypatch) -> None:
        self.forwards = self.generations = 0
        real = generation.generate_tokens

        def counted(*args, **kwargs):
            self.generations += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(generation, "generate_tokens", counted)
        self.handle = lm.model.register_forward_pre_hook(self._forward)

    def _forward(self, *_args) -> None:
        self.forwards += 1


@pytest.fixture
def counter(lm, monkeypatch):
    counter = Counter(lm, monkeypatch)
    yield counter
    counter.handle.remove()


def test_kl_is_zero_unsteered_and_grows_with_caa_strength(lm):
    assert get_metric("kl-benign").compute(RECORDS, lm=lm).aggregate == 0.0
    assert kl_result(lm, "caa", 0.0).aggregate == 0.0
    values = [kl_result(lm, "caa", s).aggregate for s in (0.5, 2.0, 8.0)]
    assert 0 < values[0] < values[1] < values[2]
    assert kl_result(lm, "caa", -2.0).aggregate > values[0]


def test_the_unsteered_model_gives_exact_zeros_without_touching_the_model(lm, counter):
    result = get_metric("kl-benign").compute(RECORDS, lm=lm, steering=None)
    assert result.values == [0.0] * len(RECORDS) and result.n_missing == 0
    assert counter.forwards == counter.generations == 0  # not even the reference is built


def test_a_steering_that_changes_nothing_gives_zero(lm):
    """A real steering context (a zero vector folded into a layer's bias), not a no-op."""
    metric = get_metric("kl-benign", max_answer_tokens=TOKENS)
    zero = torch.zeros(lm.model.config.hidden_size)
    result = metric.compute(RECORDS, lm=lm, steering=lambda: add_to_residual(lm.model, {1: zero}))
    assert result.n_missing == 0 and all(0 <= v < 1e-6 for v in result.values)


def test_the_reference_is_computed_once_and_a_cell_costs_one_pass_per_batch(lm, counter):
    """One pass per batch over each item's own tokens (after the prefix they share)."""
    metric = get_metric("kl-benign", max_answer_tokens=TOKENS, batch_size=3)
    kl_result(lm, "caa", 2.0, metric=metric)
    assert counter.generations == 1
    first = counter.forwards  # generation's passes, the reference's 2 and the steered 2
    counter.forwards = 0
    again = kl_result(lm, "caa", -1.0, metric=metric)
    # 4 items in batches of 3: the first batch runs the system turn its prompts share, then
    # their own tokens; the second, one prompt, has nothing to share: one pass
    assert counter.generations == 1 and counter.forwards == 2 + 1
    assert first > 4 and again.n_missing == 0
    assert len(metric.floor_inputs(RECORDS, lm)) == 4 and counter.generations == 1
    kl_result(lm, "caa", 2.0, records=RECORDS[:2], metric=metric)  # other prompts: a new one
    assert counter.generations == 2
    metric.config.top_k = 8  # other options: a new one
    kl_result(lm, "caa", 2.0, metric=metric)
    assert counter.generations == 3


def exact_kl(lm, answers, steering, bias=None) -> list[float]:
    """Mean over answer positions of the full-vocabulary KL(unsteered || steered), from
    two plain forward passes per item, one sequence at a time (no padding). ``bias``:
    (token ids, value, window) of a logit bias applied by hand to the steered side."""
    tokenizer, model = lm.tokenizer, lm.model

    def log_probs(prompt: str, answer: list[int]) -> torch.Tensor:
        ids = prompt_token_ids(tokenizer, format_prompts(tokenizer, [prompt]), chat=True)[0]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids + answer])).logits[0]
        return logits[len(ids) - 1 : len(ids) - 1 + len(answer)].float()

    values = []
    for record, answer in zip(RECORDS, answers):
        reference = torch.log_softmax(log_probs(record.prompt, answer), -1)
        with steering():
            steered = log_probs(record.prompt, answer)
        if bias is not None:
            tokens, value, window = bias
            steered[:window, tokens] += value
        steered = torch.log_softmax(steered, -1)
        values.append(float((reference.exp() * (reference - steered)).sum(-1).mean()))
    return values


def reference_answers(lm) -> list[list[int]]:
    settings = generation.GenerationSettings(max_new_tokens=TOKENS, batch_size=1)
    return generation.generate_tokens(
        lm.model,
        lm.tokenizer,
        [r.prompt for r in RECORDS],
        settings,
        PromptFormat(),
        progress=False,
    )


@pytest.mark.parametrize(
    ("name", "strength", "params"),
    [
        ("caa", 2.0, {}),
        ("prompt", -2.0, {}),
        ("refusal-logit-bias", -10.0, {"openers": ["Mix", "The", "the", "and", "sea"]}),
    ],
)
def test_at_k_vocab_it_is_the_exact_kl_on_the_unsteered_answers(lm, name, strength, params):
    method, artifact = fitted(lm, name, **params)
    metric = get_metric("kl-benign", max_answer_tokens=TOKENS, top_k=10_000)
    answers = reference_answers(lm)  # greedy, one prompt at a time
    assert metric.reference(RECORDS, lm).answers == answers
    result = metric.compute(
        RECORDS, lm=lm, steering=lambda: method.steer(lm.model, artifact, strength)
    )
    bias = None
    if name == "refusal-logit-bias":  # the output level, by hand: the first 3 positions
        bias = (artifact.tensors["token_ids"].long(), strength, 3)
    exact = exact_kl(lm, answers, lambda: method.steer(lm.model, artifact, strength), bias)
    assert result.values == pytest.approx(exact, abs=1e-5)
    assert min(exact) > 1e-3 and result.extra["gap_bound_max"] == 0.0
    assert result.extra["reference_tail_mass_mean"] == 0.0


@pytest.mark.parametrize("k", [1, 3, 40])
def test_below_vocab_the_exact_kl_lies_within_the_reported_bound(lm, k):
    method, artifact = fitted(lm, "caa")
    metric = get_metric("kl-benign", max_answer_tokens=TOKENS, top_k=k)
    result = metric.compute(RECORDS, lm=lm, steering=lambda: method.steer(lm.model, artifact, 2))
    exact = exact_kl(lm, reference_answers(lm), lambda: method.steer(lm.model, artifact, 2))
    extra = result.extra
    assert 0 < extra["reference_tail_mass_mean"] < 1 and extra["gap_bound_max"] > 0
    for value, truth in zip(result.values, exact):
        assert value - 1e-6 <= truth <= value + extra["gap_bound_max"] + 1e-6
    assert result.aggregate < sum(exact) / len(exact)  # a strict lower bound here
    assert sum(exact) / len(exact) <= result.aggregate + extra["gap_bound_mean"] + 1e-6


def random_pair(vocab: int, rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scale = torch.rand(rows, 1, generator=generator) * 4
    reference = torch.randn(rows, vocab, generator=generator) * scale
    steered = reference + torch.randn(rows, vocab, generator=generator) * scale
    return torch.log_softmax(reference.double(), -1), torch.log_softmax(steered.double(), -1)


@pytest.mark.parametrize("ranks", [1024, 2])
@pytest.mark.parametrize(("vocab", "k"), [(50, 1), (50, 5), (50, 25), (50, 49), (8, 8)])
def test_partition_kl_is_a_lower_bound_and_its_gap_bound_holds(vocab, k, ranks, monkeypatch):
    """Also when the bound reads fewer least likely tokens than the worst tail needs."""
    monkeypatch.setattr(kl_benign, "TAIL_RANKS", ranks)
    reference, steered = random_pair(vocab, 200, seed=vocab + k)
    exact = (reference.exp() * (reference - steered)).sum(-1)
    approx, bound = partition_kl(steered, *compress(reference, k))
    assert (approx <= exact + 1e-12).all() and (exact <= approx + bound + 1e-12).all()
    if k >= vocab - 1:  # one tail token or none: the partition loses nothing
        assert torch.allclose(approx, exact) and (bound < 1e-12).all()
    else:
        assert (exact - approx).max() > 1e-3  # the test can see a gap


@pytest.mark.parametrize("k", [1, 4, 10])
def test_the_gap_bound_is_reached_by_the_worst_tail(k):
    """The bound is the largest gap the stored reference allows: a reference whose tail
    puts r_k on each of the tokens the steered model finds least likely (the rest on the
    next one) has exactly that gap."""
    vocab, tail_tokens = 40, 3.5  # mass for 3.5 tokens at r_k
    steered = torch.log_softmax(
        torch.randn(vocab, generator=torch.Generator().manual_seed(k)).double(), -1
    )
    order = steered.argsort()  # least likely first
    top, least = order[-k:], order[: math.ceil(tail_tokens)]
    probs = torch.zeros(vocab, dtype=torch.float64)
    probs[top] = 1.0 + 1e-9  # just above the tail's tokens: no ties in the top k
    probs[least[:3]], probs[least[3]] = 1.0, 0.5
    probs = probs / probs.sum()
    reference = torch.log(probs)
    approx, bound = partition_kl(steered, *compress(reference, k))
    exact = torch.xlogy(probs, probs).sum() - (probs * steered).sum()
    assert float(exact - approx) == pytest.approx(float(bound), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "strength", "params"),
    [("prompt", -2.0, {}), ("refusal-logit-bias", -10.0, {"openers": ["Mix", "The"]})],
)
def test_kl_sees_input_and_output_level_methods(lm, name, strength, params):
    assert kl_result(lm, name, 0.0, **params).aggregate == 0.0
    assert kl_result(lm, name, strength, **params).aggregate > 1e-3


@pytest.mark.parametrize(
    ("name", "strength", "params"),
    [("caa", 2.0, {}), ("refusal-logit-bias", -10.0, {"openers": ["Mix", "The", "Yes"]})],
)
def test_batched_kl_equals_one_item_at_a_time(lm, name, strength, params):
    """Left padding leaves each item's answer logits unchanged (float32), and a stateful
    logits processor (the bias window starts where the prompt ends) is fresh per item."""
    method, artifact = fitted(lm, name, **params)

    def values(batch_size: int) -> list:
        metric = get_metric("kl-benign", max_answer_tokens=TOKENS, batch_size=batch_size)
        return metric.compute(
            RECORDS, lm=lm, steering=lambda: method.steer(lm.model, artifact, strength)
        ).values

    one, batched = values(1), values(4)
    assert batched == pytest.approx(one, rel=1e-4)
    assert all(v > 0 for v in one) and one[0] != pytest.approx(one[1])


def test_an_empty_reference_answer_is_missing(lm, monkeypatch):
    real = generation.generate_tokens
    eos = lm.tokenizer.eos_token_id

    def ends_at_once(model, tokenizer, prompts, *args, **kwargs):
        answers = real(model, tokenizer, prompts, *args, **kwargs)
        return [[eos] if p == RECORDS[2].prompt else a for p, a in zip(prompts, answers)]

    monkeypatch.setattr(generation, "generate_tokens", ends_at_once)
    metric = get_metric("kl-benign", max_answer_tokens=TOKENS)
    result = kl_result(lm, "caa", 2.0, metric=metric)
    assert result.values[2] is None and result.n_missing == 1
    assert all(v > 0 for i, v in enumerate(result.values) if i != 2)
    floor = metric.floor_inputs(RECORDS, lm)
    reference = metric.reference(RECORDS, lm)
    rendered = format_prompts(lm.tokenizer, [r.prompt for r in RECORDS])
    prompts = prompt_token_ids(lm.tokenizer, rendered, chat=True)
    expected = [p + a[:-1] for p, a in zip(prompts, reference.answers) if a]
    assert floor == expected and len(floor) == 3
