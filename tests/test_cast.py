"""CAST (methods/cast.py): CAA's vector added only to the rows whose prompt crosses the
condition threshold, decided from the prompt and kept per row under continuous batching."""

from collections import Counter

import pytest
import torch
from helpers import NEGATIVE, POSITIVE, PROBE, logits

from steerbench.errors import SteerbenchError
from steerbench.method import Artifact, FitContext, get_method
from steerbench.methods.cast import balanced_accuracy, balanced_threshold
from steerbench.model.capture import capture_last_token
from steerbench.model.chat import format_prompts, prompt_token_ids
from steerbench.model.generation import GenerationSettings, generate_tokens
from steerbench.model.kv_batch import Row, RunningBatch
from steerbench.testing import ARCHITECTURES, check_method, tiny_model

PROMPTS = [
    *PROBE,
    *POSITIVE,
    *NEGATIVE,
    "Hi",
    "Explain how a transformer predicts the next token, step by step, with an example",
    "Write a poem about the wind and the rain",
    "Numbers 0 1 2 3 and symbols",
]


def fit(model, tokenizer, name="cast", **params):
    method = get_method(name, **params)
    return method, method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)


def scores(model, tokenizer, artifact, prompts=PROMPTS) -> torch.Tensor:
    """The projections on c, from a capture of their own (not the method's hooks)."""
    layer = artifact.metadata["condition_layer"]
    return (
        capture_last_token(model, tokenizer, prompts).resid_post[:, layer]
        @ (artifact.tensors["condition"])
    )


def splitting_threshold(values: torch.Tensor) -> float:
    """The middle of the widest gap between the middle scores: some rows fire, some do not,
    and no score lies near it (batch padding moves scores by rounding only)."""
    ordered = values.sort().values
    low = len(ordered) // 4
    gaps = ordered[low + 1 : len(ordered) - low] - ordered[low : len(ordered) - low - 1]
    i = low + int(gaps.argmax())
    return float((ordered[i] + ordered[i + 1]) / 2)


@pytest.mark.parametrize(
    ("arch", "scope"), [*((arch, "generation") for arch in ARCHITECTURES), ("qwen2", "all")]
)
def test_keeps_the_method_contract(arch, scope):
    model, tokenizer = tiny_model(arch)
    check_method(get_method("cast", scope=scope, threshold=-1e4), model, tokenizer)


def test_keeps_the_contract_with_the_fitted_threshold():
    """The conformance model (qwen2, seed 1): its benign probe prompts do not fire, so
    ``fires: below`` (steer what the condition does not catch) is what changes them."""
    model, tokenizer = tiny_model("qwen2", seed=1)
    _, artifact = fit(model, tokenizer)
    assert artifact.metadata["discovery_fired"] == {"positive": 3, "negative": 0}
    check_method(get_method("cast", fires="below"), model, tokenizer)


def test_fit_is_caa_vector_unit_condition_and_separating_threshold(tiny_qwen):
    model, tokenizer = tiny_qwen
    _, artifact = fit(model, tokenizer)
    _, caa = fit(model, tokenizer, "caa")
    pos = capture_last_token(model, tokenizer, POSITIVE).resid_post
    neg = capture_last_token(model, tokenizer, NEGATIVE).resid_post
    layer = artifact.metadata["condition_layer"]
    assert (layer, artifact.metadata["layers"]) == (1, [2])  # 4 layers: one before CAA's 2
    torch.testing.assert_close(artifact.tensors["vectors"], caa.tensors["vectors"])
    diff = pos[:, layer].mean(0) - neg[:, layer].mean(0)
    torch.testing.assert_close(artifact.tensors["condition"], diff / diff.norm())
    p, n = pos[:, layer] @ (diff / diff.norm()), neg[:, layer] @ (diff / diff.norm())
    threshold = float(artifact.tensors["threshold"])
    assert p.min() > n.max()  # separable: the midpoint of the closest pair
    assert threshold == pytest.approx(float(p.min() + n.max()) / 2, rel=1e-5)
    assert artifact.metadata["threshold"] == threshold
    assert artifact.metadata["balanced_accuracy"] == 1.0
    assert artifact.metadata["discovery_fired"] == {
        "positive": int((p > threshold).sum()),
        "negative": int((n > threshold).sum()),
    }
    _, below = fit(model, tokenizer, fires="below", threshold=float(p.max()))
    assert below.metadata["discovery_fired"] == {"positive": 3, "negative": 3}


def test_balanced_threshold_is_the_best_of_every_threshold():
    assert balanced_threshold(torch.tensor([3.0, 4.0, 5.0]), torch.tensor([0.0, 1.0, 2.0])) == (
        2.5,
        1.0,
    )
    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(9, generator=gen) + 0.5, torch.randn(7, generator=gen)
    threshold, accuracy = balanced_threshold(pos, neg)
    grid = torch.linspace(-4, 4, 4001, dtype=torch.float64)
    brute = max(
        ((pos > t).float().mean() + (neg <= t).float().mean()).item() / 2 for t in grid.tolist()
    )
    assert accuracy == pytest.approx(brute) and 0.5 < accuracy < 1.0
    assert float(balanced_accuracy(pos, neg, torch.tensor([threshold]))[0]) == accuracy


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_rows_below_are_unsteered_and_rows_above_are_caa(arch):
    """One left-padded forward pass over a batch mixing both kinds, scope all: each row
    below the threshold is bit for bit the unsteered row, each row above is CAA's at the
    same strength (``fires: below`` swaps them)."""
    model, tokenizer = tiny_model(arch)
    _, probe = fit(model, tokenizer)
    values = scores(model, tokenizer, probe)
    threshold = splitting_threshold(values)
    above = values > threshold
    assert above.any() and not above.all()
    caa, caa_artifact = fit(model, tokenizer, "caa")
    plain = logits(model, tokenizer, PROMPTS)
    with caa.steer(model, caa_artifact, 4.0):
        steered = logits(model, tokenizer, PROMPTS)
    assert not torch.allclose(steered[above], plain[above])
    for rule, fired in [("above", above), ("below", ~above)]:
        cast, artifact = fit(model, tokenizer, scope="all", threshold=threshold, fires=rule)
        with cast.steer(model, artifact, 4.0):
            out = logits(model, tokenizer, PROMPTS)
        assert torch.equal(out[~fired], plain[~fired])
        torch.testing.assert_close(out[fired], steered[fired], rtol=1e-4, atol=1e-4)


@pytest.fixture
def early_eos(request):
    """A tiny model whose end-of-answer token is one it often emits, so that answers end
    at different steps and rows leave and join the running batch at different times."""
    model, tokenizer = tiny_model(request.param)
    settings = GenerationSettings(max_new_tokens=10, batch_size=16)
    answers = generate_tokens(model, tokenizer, PROMPTS, settings, progress=False)
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = Counter(t for a in answers for t in a[2:8]).most_common(
        1
    )[0][0]
    yield model, tokenizer
    model.generation_config.eos_token_id = original


@pytest.mark.parametrize(
    ("early_eos", "schedule"),
    [
        ("qwen2", "continuous"),
        ("llama", "continuous"),
        ("qwen2", "static"),
        ("gemma3_text", "continuous"),
    ],
    indirect=["early_eos"],
    ids=["qwen2-continuous", "llama-continuous", "qwen2-static", "gemma3-falls-back-to-static"],
)
def test_generation_steers_each_row_by_its_own_prompt(early_eos, schedule):
    """Greedy answers with rows joining and leaving the batch: a row whose prompt fires is
    CAA's answer (scope generation), token for token, any other row the unsteered answer;
    the context counts the prompts (not the shared chat-template prefix) and the fired."""
    model, tokenizer = early_eos
    settings = GenerationSettings(  # gemma3's sliding-window cache: static batches always
        max_new_tokens=10, batch_size=3, refill_rows=1, schedule=schedule
    )
    _, probe = fit(model, tokenizer)
    values = scores(model, tokenizer, probe)
    threshold = splitting_threshold(values)
    above = (values > threshold).tolist()

    def answers(steering=None):
        if steering is None:
            return generate_tokens(model, tokenizer, PROMPTS, settings, progress=False)
        with steering:
            return generate_tokens(model, tokenizer, PROMPTS, settings, progress=False)

    plain = answers()
    caa, caa_artifact = fit(model, tokenizer, "caa", scope="generation")
    steered = answers(caa.steer(model, caa_artifact, 4.0))
    cast, artifact = fit(model, tokenizer, threshold=threshold)
    context = cast.steer(model, artifact, 4.0)
    conditional = answers(context)
    assert len({len(a) for a in plain}) > 2  # rows really end at different steps
    assert any(steered[i] != plain[i] for i in range(len(PROMPTS)) if above[i])
    for i, fired in enumerate(above):
        assert conditional[i] == (steered[i] if fired else plain[i]), f"prompt {i}"
    counts = context.take_counts()
    assert (counts.prompts, counts.steered) == (len(PROMPTS), sum(above))
    assert context.take_counts().prompts == 0


def test_scope_all_generation_equals_caa_on_fired_rows():
    """Static batches (the whole prompt in one pass): scope all steers a fired row's prompt
    and answer as CAA does, the others not at all."""
    model, tokenizer = tiny_model("gemma3_text")
    settings = GenerationSettings(max_new_tokens=8, batch_size=4, schedule="static")
    _, probe = fit(model, tokenizer)
    values = scores(model, tokenizer, probe)
    threshold = splitting_threshold(values)
    above = (values > threshold).tolist()
    plain = generate_tokens(model, tokenizer, PROMPTS, settings, progress=False)
    caa, caa_artifact = fit(model, tokenizer, "caa")
    with caa.steer(model, caa_artifact, 4.0):
        steered = generate_tokens(model, tokenizer, PROMPTS, settings, progress=False)
    cast, artifact = fit(model, tokenizer, scope="all", threshold=threshold)
    with cast.steer(model, artifact, 4.0):
        conditional = generate_tokens(model, tokenizer, PROMPTS, settings, progress=False)
    assert any(steered[i] != plain[i] for i in range(len(PROMPTS)) if above[i])
    assert conditional == [s if f else p for s, p, f in zip(steered, plain, above)]


def test_a_row_decided_outside_the_context_is_an_error_not_a_guess(tiny_qwen):
    """A row prefilled before the block joins rows prefilled inside it: the decoding step
    cannot know its decision, and says so."""
    model, tokenizer = tiny_qwen
    cast, artifact = fit(model, tokenizer)
    ids = prompt_token_ids(tokenizer, format_prompts(tokenizer, PROBE), chat=True)
    batch = RunningBatch(model, torch.device("cpu"))
    with torch.inference_mode():
        outside = batch.prefill([Row(0, ids[0])], None, 0)
        with cast.steer(model, artifact, 1.0):
            inside = batch.prefill([Row(1, ids[1])], None, 0)
            with pytest.raises(SteerbenchError, match="lost track"):
                batch.step(torch.cat([outside, inside]).argmax(-1))
        with cast.steer(model, artifact, 1.0), pytest.raises(SteerbenchError, match="cannot tell"):
            batch.step(torch.cat([outside, inside]).argmax(-1))


def test_refuses_what_it_cannot_do(tiny_qwen):
    model, tokenizer = tiny_qwen
    with pytest.raises(SteerbenchError, match="fires must be"):
        get_method("cast", fires="sometimes")
    with pytest.raises(SteerbenchError, match="after the first steering layer"):
        fit(model, tokenizer, scope="all", condition_layer=3)
    with pytest.raises(SteerbenchError, match="condition_layer must be in"):
        fit(model, tokenizer, condition_layer=4)
    cast, artifact = fit(model, tokenizer, condition_layer=3)  # generation scope: any layer
    assert artifact.metadata["condition_layer"] == 3
    tensors = {**artifact.tensors, "threshold": torch.zeros(2)}
    with pytest.raises(SteerbenchError, match=r"threshold.*expected 0 dimensions"):
        cast.steer(model, Artifact("cast", tensors, artifact.metadata), 1.0)
    with pytest.raises(SteerbenchError, match="fitted at condition layer 3, not 1"):
        get_method("cast").steer(model, artifact, 1.0)
