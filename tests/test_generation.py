import torch

from steerbench.generation import GenerationSettings, generate
from steerbench.prompts import PromptFormat, format_prompts

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
