"""Reading many sequences after the prefix they share, run once (steerbench.model.prefix):
the last-position logits equal each sequence's own forward pass alone, the prefix is fed
to the model once, and without a shareable prefix (or with a cache that cannot share one)
it is a plain batched forward."""

from __future__ import annotations

import pytest
import torch

from steerbench.model.chat import length_sorted_batches
from steerbench.model.prefix import last_logits
from steerbench.testing import tiny_model

VOCAB = 384  # the tiny tokenizer's


def random_ids(n: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n,), generator=generator).tolist()


PREFIX = random_ids(48, 0)  # longer than gemma3_text's sliding window of 32
# very different own lengths (2 .. 90), not sorted by length
SEQUENCES = [PREFIX + random_ids(n, n) for n in (5, 90, 2, 33, 12)]


def alone(model, sequences: list[list[int]]) -> torch.Tensor:
    """Each sequence's last-position logits from its own forward pass, no padding."""
    with torch.inference_mode():
        return torch.stack([model(input_ids=torch.tensor([s])).logits[0, -1] for s in sequences])


def fed_tokens(model, run) -> list[tuple[int, int]]:
    """(rows, width) of the input ids of every forward pass ``run()`` makes."""
    shapes: list[tuple[int, int]] = []

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shapes.append(tuple(ids.shape))

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return shapes


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3_text"])
def model(request):
    return tiny_model(request.param)[0]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_equal_to_each_sequence_alone(model, batch_size):
    """gemma3_text (sliding-window layers) would be off by whole logits if it shared the
    prefix past its window: it must fall back to a plain batched forward."""
    expected = alone(model, SEQUENCES)
    with torch.inference_mode():
        got = last_logits(model, SEQUENCES, batch_size, "cpu")
    assert got.shape == (len(SEQUENCES), VOCAB) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(expected[0], expected[1], atol=1e-2)  # the rows really differ


def test_selected_columns_are_those_of_the_full_logits(model):
    columns = [7, 3, 300, 7]
    with torch.inference_mode():
        full = last_logits(model, SEQUENCES, 2, "cpu")
        some = last_logits(model, SEQUENCES, 2, "cpu", columns=columns)
    assert torch.equal(some, full[:, columns])


def test_the_prefix_is_fed_once_and_each_batch_only_its_suffixes():
    model, _ = tiny_model("llama")
    shapes = fed_tokens(model, lambda: last_logits(model, SEQUENCES, 2, "cpu"))
    own = [len(s) - len(PREFIX) for s in SEQUENCES]
    batches = length_sorted_batches([len(s) for s in SEQUENCES], 2)
    assert shapes == [(1, len(PREFIX))] + [(len(b), max(own[i] for i in b)) for b in batches]
    fed = sum(rows * width for rows, width in shapes)
    assert fed == len(PREFIX) + 2 * 90 + 2 * 12 + 2  # batches of own lengths (90, 33), (12, 5), (2)
    assert fed < sum(map(len, SEQUENCES))


def test_a_sliding_window_cache_shares_no_prefix():
    model, _ = tiny_model("gemma3_text")
    shapes = fed_tokens(model, lambda: last_logits(model, SEQUENCES, 2, "cpu"))
    batches = length_sorted_batches([len(s) for s in SEQUENCES], 2)
    assert shapes == [(len(b), max(len(SEQUENCES[i]) for i in b)) for b in batches]


@pytest.mark.parametrize(
    "sequences",
    [
        [[*PREFIX, 5, 6, 7]],  # a single sequence
        [random_ids(20, 1), random_ids(7, 2), random_ids(31, 3)],  # no common prefix
        [[*PREFIX[:2], 5], [*PREFIX[:2], 6, 7]],  # sharing would leave < 2 own tokens
    ],
)
def test_without_a_shareable_prefix_it_is_a_plain_batched_forward(sequences):
    model, _ = tiny_model("qwen2")
    with torch.inference_mode():
        shapes = fed_tokens(model, lambda: last_logits(model, sequences, 2, "cpu"))
        got = last_logits(model, sequences, 2, "cpu")
    batches = length_sorted_batches([len(s) for s in sequences], 2)
    assert shapes == [(len(b), max(len(sequences[i]) for i in b)) for b in batches]
    torch.testing.assert_close(got, alone(model, sequences), rtol=1e-5, atol=1e-4)


def test_no_sequences_give_an_empty_result():
    model, _ = tiny_model("qwen2")
    assert last_logits(model, [], 4, "cpu").shape == (0, VOCAB)
    assert last_logits(model, [], 4, "cpu", columns=[1, 2]).shape == (0, 2)


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gemma3_text"])
@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_continuation_log_likelihoods_equal_each_pair_scored_alone(arch, batch_size):
    from steerbench.model.prefix import continuation_log_likelihoods

    model, _ = tiny_model(arch)
    primer = list(range(5, 45))  # the prefix every context shares
    pairs = [
        ([*primer, 50, 51, 52], [60, 61]),
        ([*primer, 50, 51, 52], [70]),
        ([*primer, 53, 54], [80, 81, 82, 83]),
        ([*primer, 55, 56, 57, 58, 59], [90, 91, 92]),
        ([*primer, 53, 54], [60]),
    ]
    got = continuation_log_likelihoods(model, pairs, batch_size, "cpu")
    for (context, continuation), value in zip(pairs, got):
        ids = torch.tensor([context + continuation])
        with torch.inference_mode():
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        start = len(context)
        alone = sum(float(log_probs[start + j - 1, t]) for j, t in enumerate(continuation))
        assert value == pytest.approx(alone, abs=1e-4)
