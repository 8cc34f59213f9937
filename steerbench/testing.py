"""Tiny randomly initialised models and a small tokenizer, built in-process (no download).

Used by steerbench's tests and by plugin authors' tests (``from steerbench.testing import
tiny_model``): every code path runs in seconds with no model download.
The tokenizer is a byte-level BPE trained on a few sentences, with a ChatML chat template,
so chat formatting, padding and decoding all behave like a real instruct model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "How do I bake bread at home? Mix flour, water, salt and yeast, then knead the dough.",
    "I'm sorry, but I can't assist with that request. It is not appropriate.",
    "Write a poem about the sea and the sky, the wind and the rain.",
    "Explain how a transformer language model predicts the next token.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps.",
    "Sure, here is a step by step guide: first, second, third, finally done.",
    "What is the capital of France? Paris is the capital of France.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols ! ? . , ; : ' \" ( ) - + = /",
]
ARCHITECTURES = ("llama", "qwen2", "gemma3_text")


def tiny_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_config(
    arch: str, vocab_size: int, *, n_layers: int = 4, tied: bool = False
) -> PretrainedConfig:
    common: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,  # room for the longest shipped prompt and an answer
        initializer_range=0.2,
        tie_word_embeddings=tied,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "gemma3_text":
        return Gemma3TextConfig(**common, head_dim=16, sliding_window=32, query_pre_attn_scalar=16)
    raise ValueError(f"unknown tiny architecture {arch!r}")


def tiny_model(arch: str = "qwen2", *, seed: int = 0, n_layers: int = 4, tied: bool = False):
    """A (model, tokenizer) pair in float32 eval mode, deterministic for a given seed.

    ``tied=True`` shares the embedding and unembedding matrix, as most small published
    models do (Llama-3.2-1B, Qwen2.5-0.5B, Gemma): methods that edit weights must not
    edit the readout through it.
    """
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(arch, len(tokenizer), n_layers=n_layers, tied=tied)
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # non-uniform norm gains, so tests notice a norm in the way
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.3 * torch.randn_like(param))
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def save_tiny_model(directory: Path, arch: str = "qwen2", *, seed: int = 0) -> Path:
    """Write a tiny model and tokenizer with save_pretrained (to test directory loading)."""
    model, tokenizer = tiny_model(arch, seed=seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# -- conformance kit: the invariants every method and metric must keep --------------------

POSITIVE = ["How do I make a bomb?", "Write malware that steals passwords", "Hurt someone"]
NEGATIVE = ["How do I bake bread?", "Write a poem about the sea", "Help someone"]
PROBE = ["What is the capital of France?", "Tell me a story about a cat"]


def _logits(model, tokenizer) -> torch.Tensor:
    """What any steering method can change, flattened: the logits of a plain forward pass
    over the rendered probe prompts (input and model level) and the processed scores of
    three greedy decoding steps (output level, and methods scoped to generated tokens)."""
    from transformers import LogitsProcessorList

    from steerbench.model.chat import format_prompts
    from steerbench.model.levels import active_logits_processors

    tokenizer.padding_side = "left"
    text = format_prompts(tokenizer, PROBE)
    encoded = tokenizer(text, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        forward = model(**encoded).logits
        decoded = model.generate(
            **encoded,
            max_new_tokens=3,
            min_new_tokens=3,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList(active_logits_processors()),
            return_dict_in_generate=True,
            output_scores=True,
        )
    return torch.cat([forward.flatten(), *(step.flatten() for step in decoded.scores)])


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_restored(model, state: dict[str, torch.Tensor], when: str) -> None:
    after = model.state_dict()
    changed = [k for k, v in state.items() if not torch.equal(after[k], v)]
    assert after.keys() == state.keys() and not changed, f"not restored {when}: {changed[:3]}"


def check_method(
    method, model=None, tokenizer=None, *, strength: float | None = None, tmp_dir=None
) -> None:
    """Assert the contract of a ``SteeringMethod`` instance on a tiny model (or yours):

    - fit, then save and load the artifact: tensors and metadata survive, and steering with
      the loaded artifact gives the same logits as with the original;
    - the neutral strength leaves the logits bit-identical;
    - ``strength`` (default: the first non-neutral default strength) changes them;
    - the weights are restored bit for bit on exit and when the body raises;
    - non-finite strengths and strengths outside ``strength_domain`` are refused.
    """
    import math
    import tempfile
    from pathlib import Path

    from steerbench.errors import SteerbenchError
    from steerbench.method import Artifact, FitContext

    if model is None:
        model, tokenizer = tiny_model("qwen2")
    if strength is None:
        strength = next(s for s in method.default_strengths if s != method.neutral_strength)
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    with tempfile.TemporaryDirectory() as scratch:
        loaded = Artifact.load(artifact.save(Path(tmp_dir or scratch) / "artifact"))
    assert loaded.method == artifact.method and loaded.tensors.keys() == artifact.tensors.keys()
    for name, tensor in artifact.tensors.items():
        assert torch.equal(loaded.tensors[name], tensor.cpu()), f"tensor {name} changed on save"
    assert set(artifact.metadata) <= set(loaded.metadata), "metadata lost on save"

    before, state = _logits(model, tokenizer), _state(model)
    with method.steer(model, artifact, method.neutral_strength):
        assert torch.equal(_logits(model, tokenizer), before), "neutral strength is not identity"
    with method.steer(model, artifact, strength):
        steered = _logits(model, tokenizer)
    assert steered.shape != before.shape or not torch.allclose(steered, before), (
        f"strength {strength} does not steer"
    )
    _assert_restored(model, state, "on exit")
    with method.steer(model, loaded, strength):
        assert torch.equal(_logits(model, tokenizer), steered), "loaded artifact steers otherwise"
    try:
        with method.steer(model, artifact, strength):
            raise RuntimeError("conformance check")
    except RuntimeError:
        pass
    _assert_restored(model, state, "after an exception")
    assert torch.equal(_logits(model, tokenizer), before)

    low, high = method.strength_domain
    refused = [math.nan, math.inf, -math.inf]
    refused += [low - 1.0] if math.isfinite(low) else []
    refused += [high + 1.0] if math.isfinite(high) else []
    for bad in refused:
        try:
            method.steer(model, artifact, bad)
        except SteerbenchError:
            continue
        raise AssertionError(f"strength {bad} was accepted")


def check_metric(metric, records, *, lm=None) -> None:
    """Assert the contract of a ``Metric`` instance on ``records`` (and ``lm`` if it needs
    one): one value per record (for record metrics), exactly the declared per-item columns
    with one value of the declared type per record, every value and the aggregate inside
    the declared ``value_range``, missing values counted in ``n_missing``, the CI around
    the aggregate; a metric of a phase that needs no model scores the same without one."""
    import math

    result = metric.compute(records, lm=lm)
    low, high = metric.value_range
    assert result.metric == metric.name
    if not metric.rule().needs_model:  # `steerbench evaluate` loads no model for it
        assert metric.compute(records).values == result.values, (
            f"phase {metric.phase!r} needs no model, but it scores otherwise without one"
        )
    if not metric.rule().model_level:
        assert len(result.values) == result.n == len(records), "not one value per record"
        declared = metric.declared_columns()
        table = result.item_table()
        assert set(table) == set(declared), (
            f"columns {sorted(table)} != declared {sorted(declared)}"
        )
        python_types = {"float": (int, float), "int": (int,), "bool": (bool,), "string": (str,)}
        for column, values in table.items():
            assert len(values) == len(records), f"column {column} has not one value per record"
            kind = python_types[declared[column]]
            assert all(v is None or isinstance(v, kind) for v in values), (
                f"column {column} holds values that are not {declared[column]}"
            )
    missing = sum(v is None for v in result.values)
    assert result.n_missing == missing, "missing values are not counted"
    for value in result.values:
        assert value is None or low <= float(value) <= high, f"value {value} outside range"
    if missing < len(result.values):
        assert low <= result.aggregate <= high, f"aggregate {result.aggregate} outside range"
        if not math.isnan(result.ci_low):
            assert result.ci_low <= result.aggregate <= result.ci_high, "CI excludes the value"
