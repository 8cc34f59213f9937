from collections import Counter

import pytest
import torch

from steerbench.errors import SteerbenchError
from steerbench.model.chat import PromptFormat, format_prompts
from steerbench.model.generation import GenerationSettings, generate, generate_tokens
from steerbench.testing import tiny_model

PROMPTS = [
    "Hi",
    "How do I bake bread at home? Explain every step in great detail, with flour, water, "
    "salt and yeast, and say how long the dough should rest before it goes in the oven.",
    "Write a poem about the sea",
    "What is the capital of France?",
]


def test_greedy_batched_equals_one_prompt_at_a_time(any_tiny):
    model, tokenizer = any_tiny
    settings = GenerationSettings(max_new_tokens=12, batch_size=4)
    batched = generate(model, tokenizer, PROMPTS, settings, progress=False)
    single = [generate(model, tokenizer, [p], settings, progress=False)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1  # the prompts really produce different continuations


def test_returns_only_new_tokens_in_input_order(tiny_qwen):
    model, tokenizer = tiny_qwen
    settings = GenerationSettings(max_new_tokens=6, batch_size=2)
    out = generate(model, tokenizer, PROMPTS, settings, progress=False)
    assert len(out) == len(PROMPTS)
    rendered = format_prompts(tokenizer, PROMPTS)
    expected = []
    for text in rendered:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            full = model.generate(**ids, max_new_tokens=6, do_sample=False)
        new = full[0, ids["input_ids"].shape[1] :]
        expected.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert out == expected


def test_sampling_is_reproducible_with_a_seed(tiny_qwen):
    model, tokenizer = tiny_qwen
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    first = generate(model, tokenizer, PROMPTS, settings, progress=False)
    second = generate(model, tokenizer, PROMPTS, settings, progress=False)
    greedy = generate(
        model, tokenizer, PROMPTS, GenerationSettings(max_new_tokens=8), progress=False
    )
    assert first == second
    assert first != greedy


def test_raw_format_feeds_the_prompt_unchanged(tiny_qwen):
    _, tokenizer = tiny_qwen
    assert format_prompts(tokenizer, ["abc"], PromptFormat(chat=False)) == ["abc"]
    chat = format_prompts(tokenizer, ["abc"], PromptFormat(system_prompt="Be brief."))[0]
    assert chat == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nabc<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


# -- continuous batching: rows end at different steps, are dropped and refilled --------------

MANY = [f"{p} ({n})" for n in range(3) for p in PROMPTS]  # 12 prompts of varied length


def _alone(model, tokenizer, prompts: list[str], max_new_tokens: int = 12) -> list[list[int]]:
    """Each prompt's greedy answer ids from ``model.generate``, one prompt at a time."""
    answers = []
    for text in format_prompts(tokenizer, prompts):
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        answers.append(out[0, ids["input_ids"].shape[1] :].tolist())
    return answers


@pytest.fixture
def early_eos(request):
    """A tiny model whose end-of-answer token is one it emits part-way through some
    answers, so answers end at different steps (a random model rarely emits its real EOS)."""
    model, tokenizer = tiny_model(request.param)
    counts = Counter(t for a in _alone(model, tokenizer, MANY) for t in a[2:9])
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = counts.most_common(1)[0][0]
    yield model, tokenizer
    model.generation_config.eos_token_id = original


def _fed_shapes(model, tokenizer, settings) -> list[int]:
    """(rows, width) of the ids of every forward pass of one generate call."""
    rows = []

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        rows.append(tuple(ids.shape))

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        generate(model, tokenizer, MANY, settings, progress=False)
    finally:
        handle.remove()
    return rows


@pytest.mark.parametrize("early_eos", ["qwen2", "llama"], indirect=True)
def test_continuous_equals_static_and_one_at_a_time(early_eos):
    model, tokenizer = early_eos

    def answers(prompts, batch_size, schedule="continuous", refill_rows=None):
        settings = GenerationSettings(
            max_new_tokens=12, batch_size=batch_size, schedule=schedule, refill_rows=refill_rows
        )
        return generate_tokens(model, tokenizer, prompts, settings, progress=False)

    continuous = answers(MANY, 3)
    assert continuous == answers(MANY, 5, "static") == answers(MANY, 5, refill_rows=3)
    assert continuous == [answers([p], 1)[0] for p in MANY] == _alone(model, tokenizer, MANY)
    assert len({len(a) for a in continuous}) > 2  # answers really end at different steps


@pytest.mark.parametrize("early_eos", ["qwen2"], indirect=True)
def test_finished_rows_stop_costing_compute(early_eos):
    """Every decoding step feeds only unfinished rows (at most batch_size of them): the rows
    fed over all steps are exactly the answer tokens after each first one."""
    model, tokenizer = early_eos
    settings = GenerationSettings(max_new_tokens=12, batch_size=4)
    generated = [len(a) for a in _alone(model, tokenizer, MANY)]  # EOS included
    assert len(set(generated)) > 2
    shapes = _fed_shapes(model, tokenizer, settings)
    decode_rows = sum(rows for rows, width in shapes if width == 1)
    prefill_rows = sum(rows for rows, width in shapes if width > 1)
    assert all(rows <= settings.batch_size for rows, _ in shapes)
    assert prefill_rows == len(MANY) + 1  # and the shared chat-template prefix, once
    assert decode_rows == sum(generated) - len(MANY)
    static = GenerationSettings(max_new_tokens=12, batch_size=4, schedule="static")
    static_rows = sum(r for r, w in _fed_shapes(model, tokenizer, static) if w == 1)
    assert decode_rows < static_rows


@pytest.mark.parametrize("early_eos", ["qwen2"], indirect=True)
def test_each_row_gets_its_own_processors_and_generation_scoped_hooks(early_eos):
    """A stateful logits processor (where the prompt ended) and a residual edit applied only
    while decoding act on each row as on that prompt generated alone."""
    from steerbench.interventions import add_to_residual
    from steerbench.methods.refusal_logit_bias import OpeningTokenBias
    from steerbench.model.levels import logits_processor

    model, tokenizer = early_eos
    favoured = torch.tensor([5, 7])
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))

    def answers(schedule: str, batch_size: int) -> list[list[int]]:
        settings = GenerationSettings(max_new_tokens=10, batch_size=batch_size, schedule=schedule)
        with (
            logits_processor(lambda: OpeningTokenBias(favoured, 50.0, 2)),
            add_to_residual(model, {1: vector}, scope="generation"),
        ):
            return generate_tokens(model, tokenizer, MANY, settings, progress=False)

    plain = generate_tokens(
        model, tokenizer, MANY, GenerationSettings(max_new_tokens=10), progress=False
    )
    continuous = answers("continuous", 4)  # rows of different prompt lengths
    assert continuous == answers("static", 1)
    assert continuous != plain


@pytest.mark.parametrize("early_eos", ["qwen2"], indirect=True)
def test_waiting_prompts_join_once_refill_rows_are_free(early_eos):
    """After the first pass, a prompt pass carries at least refill_rows prompts, or every
    prompt still waiting; with refill_rows=1 each free row is refilled at once."""
    model, tokenizer = early_eos

    def prompt_passes(refill_rows: int) -> list[int]:
        settings = GenerationSettings(max_new_tokens=12, batch_size=3, refill_rows=refill_rows)
        shapes = _fed_shapes(model, tokenizer, settings)
        return [rows for rows, width in shapes if width > 1][2:]  # not prefix, first pass

    eager, patient = prompt_passes(1), prompt_passes(3)
    assert sum(eager) == sum(patient) == len(MANY) - 3
    assert min(eager) == 1
    waiting = len(MANY) - 3
    for rows in patient:
        assert rows >= min(3, waiting)
        waiting -= rows
    assert len(patient) < len(eager)


def test_refill_rows_defaults_to_an_eighth_of_the_batch_and_is_checked():
    assert GenerationSettings(batch_size=64).refill_rows == 8
    assert GenerationSettings(batch_size=4).refill_rows == 1
    with pytest.raises(SteerbenchError, match="refill_rows must be between 1 and batch_size"):
        GenerationSettings(batch_size=4, refill_rows=5)


def test_schedule_is_checked():
    with pytest.raises(SteerbenchError, match="schedule must be one of continuous, static"):
        GenerationSettings(schedule="paged")
