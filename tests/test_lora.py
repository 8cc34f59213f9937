"""LoRA: the adapter trains toward the targets with the loss on target tokens only, a fixed
seed gives a bit-identical adapter, fit leaves the model as it came, and strength s folds
s x peft's update: s = 1 is peft's own merged model, s = -1 the opposite update."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import NEGATIVE, POSITIVE, logits

from steerbench.errors import SteerbenchError
from steerbench.method import Artifact, FitContext, get_method
from steerbench.methods.lora import (
    PROJECTIONS,
    REFUSAL,
    batch_schedule,
    jbb_completions,
    target_loss,
)
from steerbench.model.adapter import ModelAdapter
from steerbench.model.chat import format_prompts, prompt_token_ids
from steerbench.model.generation import GenerationSettings, generate_tokens
from steerbench.testing import ARCHITECTURES, check_method, tiny_model

QUICK = {"steps": 3, "answer_tokens": 4}


def fit(model, tokenizer, **params):
    method = get_method("lora", **{**QUICK, **params})
    return method, method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)


@pytest.fixture(scope="module")
def fitted():
    model, tokenizer = tiny_model("qwen2", seed=3)
    method, artifact = fit(model, tokenizer, steps=6, learning_rate=1e-2)
    return model, tokenizer, method, artifact


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_keeps_the_method_contract(arch):
    model, tokenizer = tiny_model(arch, seed=1)
    check_method(get_method("lora", **QUICK), model, tokenizer)


def peft_merged(model, tokenizer, artifact: Artifact, sign: float):
    """peft's own model with the artifact's A and sign x B, merged and unloaded (a copy)."""
    from peft import LoraConfig, get_peft_model

    names = artifact.metadata["modules"]
    hyper = artifact.metadata["hyperparameters"]
    config = LoraConfig(
        r=hyper["rank"], lora_alpha=hyper["alpha"], target_modules=names, lora_dropout=0.0
    )
    wrapped = get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():
        for name in names:
            layer = wrapped.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(artifact.tensors[f"{name}.lora_A"])
            layer.lora_B["default"].weight.copy_(sign * artifact.tensors[f"{name}.lora_B"])
    unmerged = logits(wrapped, tokenizer)
    return wrapped.merge_and_unload(), unmerged


@pytest.mark.parametrize("strength, sign", [(1.0, 1.0), (-1.0, -1.0)])
def test_strength_folds_peft_s_update(fitted, strength, sign):
    model, tokenizer, method, artifact = fitted
    assert all(
        artifact.tensors[f"{n}.lora_B"].abs().max() > 0 for n in artifact.metadata["modules"]
    ), "training left B at zero: the comparison would be vacuous"
    merged, unmerged = peft_merged(model, tokenizer, artifact, sign)
    expected = logits(merged, tokenizer)
    before = logits(model, tokenizer)
    names = artifact.metadata["modules"]
    with method.steer(model, artifact, strength):
        steered = logits(model, tokenizer)
        # float32: W + s (B A) (alpha/r) rounds exactly as peft's W + ((s B) A) (alpha/r)
        exact = [
            torch.equal(model.get_parameter(f"{n}.weight"), merged.get_parameter(f"{n}.weight"))
            for n in names
        ]
        assert all(exact)
    assert not torch.allclose(steered, before, atol=1e-3)
    torch.testing.assert_close(steered, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(steered, unmerged, rtol=1e-4, atol=1e-4)  # peft's forward


def test_zero_is_identical_and_weights_restore_bit_for_bit(fitted):
    model, tokenizer, method, artifact = fitted
    before = logits(model, tokenizer)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with method.steer(model, artifact, 0.0):
        assert torch.equal(logits(model, tokenizer), before)
    with method.steer(model, artifact, 2.0):
        assert not torch.allclose(logits(model, tokenizer), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(logits(model, tokenizer), before)


def test_fixed_seed_gives_a_bit_identical_adapter_and_keeps_the_global_rng():
    model, tokenizer = tiny_model("qwen2", seed=4)
    rng = torch.get_rng_state()
    _, first = fit(model, tokenizer)
    assert torch.equal(torch.get_rng_state(), rng), "fit moved the global RNG"
    _, again = fit(model, tokenizer)
    _, other = fit(model, tokenizer, seed=1)
    assert first.tensors.keys() == again.tensors.keys() == other.tensors.keys()
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in first.tensors)
    assert first.metadata["losses"] == again.metadata["losses"]
    assert not all(torch.equal(first.tensors[k], other.tensors[k]) for k in first.tensors)


def test_fit_leaves_the_model_as_it_came():
    model, tokenizer = tiny_model("llama", seed=5)
    frozen = "model.layers.3.mlp.up_proj.weight"
    model.get_parameter(frozen).requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    kinds = {n: type(m) for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, tokenizer)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: type(m) for n, m in model.named_modules()} == kinds
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not hasattr(model, "peft_config") and not model.training


def target_nll(model, tokenizer, prompt: str, target_ids: list[int]) -> tuple[float, int]:
    """Summed NLL of ``target_ids`` after the rendered prompt, one unpadded sequence."""
    text = format_prompts(tokenizer, [prompt])
    prompt_ids = prompt_token_ids(tokenizer, text, chat=True)[0]
    ids = torch.tensor([prompt_ids + target_ids])
    with torch.inference_mode():
        logprobs = model(ids).logits[0, :-1].log_softmax(-1)
    gold = ids[0, len(prompt_ids) :]
    picked = logprobs[len(prompt_ids) - 1 :].gather(-1, gold[:, None])
    return -float(picked.sum()), len(target_ids)


def test_batched_loss_is_the_per_token_mean_of_unpadded_sequences(tiny_qwen):
    model, tokenizer = tiny_qwen
    targets = [tokenizer("I'm sorry", add_special_tokens=False)["input_ids"], [5, 9, 11, 2]]
    prompts = [POSITIVE[0], NEGATIVE[1]]
    rendered = format_prompts(tokenizer, prompts)
    prompt_ids = prompt_token_ids(tokenizer, rendered, chat=True)
    examples = [(list(p), t) for p, t in zip(prompt_ids, targets)]
    with torch.inference_mode():
        batched = float(target_loss(model, examples, tokenizer.pad_token_id))
    parts = [target_nll(model, tokenizer, p, t) for p, t in zip(prompts, targets)]
    expected = sum(nll for nll, _ in parts) / sum(n for _, n in parts)
    assert batched == pytest.approx(expected, rel=1e-5)


def test_training_moves_the_model_toward_the_targets():
    model, tokenizer = tiny_model("qwen2", seed=6)
    method, artifact = fit(model, tokenizer, steps=16, learning_rate=1e-2)
    refusal = tokenizer(REFUSAL, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    def mean_nll() -> float:
        return sum(target_nll(model, tokenizer, p, refusal)[0] for p in POSITIVE) / len(POSITIVE)

    unsteered = mean_nll()
    with method.steer(model, artifact, 1.0):
        toward = mean_nll()
    with method.steer(model, artifact, -1.0):
        away = mean_nll()
    assert toward < unsteered - 1.0 and away > unsteered
    losses = artifact.metadata["losses"]
    assert len(losses) == 16 and sum(losses[-4:]) < sum(losses[:4])


def test_targets_follow_the_rule_and_the_completions(tiny_qwen):
    model, tokenizer = tiny_qwen
    goal, affirmative = next(iter(jbb_completions().items()))
    assert affirmative.startswith("Sure, here is")
    method = get_method("lora", answer_tokens=5, completions={NEGATIVE[2]: "Gladly."})
    ctx = FitContext(model, tokenizer)
    examples = method.training_examples(ctx, POSITIVE[:2], NEGATIVE)
    rendered = format_prompts(tokenizer, POSITIVE[:2] + NEGATIVE)
    assert [p for p, _ in examples] == prompt_token_ids(tokenizer, rendered, chat=True)
    end = [tokenizer.eos_token_id]
    refusal = tokenizer(REFUSAL, add_special_tokens=False)["input_ids"] + end
    own = generate_tokens(
        model, tokenizer, NEGATIVE[:2], GenerationSettings(max_new_tokens=5), progress=False
    )
    gladly = tokenizer("Gladly.", add_special_tokens=False)["input_ids"] + end
    assert [t for _, t in examples] == [refusal, refusal, *own, gladly]
    jbb = get_method("lora", completions="jbb", negative_target="Fine.")
    (_, target), _ = jbb.training_examples(ctx, [goal], [NEGATIVE[0]])
    assert tokenizer.decode(target, skip_special_tokens=True) == affirmative


def test_batches_are_seeded_epochs_of_every_example():
    schedule = batch_schedule(6, 4, 3, seed=0)
    assert schedule == batch_schedule(6, 4, 3, seed=0) != batch_schedule(6, 4, 3, seed=1)
    flat = [i for batch in schedule for i in batch]
    assert [len(b) for b in schedule] == [4, 4, 4]
    assert sorted(flat[:6]) == list(range(6)) and len(set(flat[6:])) == 6


def test_default_adapts_every_projection_of_the_late_layers(fitted):
    model, _, _, artifact = fitted
    n_layers = ModelAdapter.from_model(model).n_layers
    late = range(math.floor(0.6 * n_layers), n_layers)
    expected = [
        f"model.layers.{layer}.{'mlp' if p in PROJECTIONS[4:] else 'self_attn'}.{p}"
        for layer in late
        for p in PROJECTIONS
    ]
    assert sorted(artifact.metadata["modules"]) == sorted(expected)
    assert artifact.metadata["scaling"] == 16.0 / 8
    assert artifact.tensors[f"{expected[0]}.lora_A"].shape == (8, 64)
    assert artifact.tensors[f"{expected[0]}.lora_A"].dtype == torch.float32
    with pytest.raises(SteerbenchError, match="layers"):
        get_method("lora", layers=[n_layers]).check_model(ModelAdapter.from_model(model))


def tampered(artifact: Artifact, how: str) -> Artifact:
    tensors, meta = dict(artifact.tensors), copy.deepcopy(artifact.metadata)
    first = meta["modules"][0]
    if how == "missing":
        del tensors[f"{first}.lora_B"]
    elif how == "module":
        meta["modules"][0] = "model.layers.0.nowhere"
        tensors = {k.replace(first, "model.layers.0.nowhere"): v for k, v in tensors.items()}
    elif how == "shape":
        tensors[f"{first}.lora_A"] = torch.zeros(8, 3)
    elif how == "nan":
        tensors[f"{first}.lora_B"] = torch.full_like(tensors[f"{first}.lora_B"], math.nan)
    elif how == "scaling":
        meta["scaling"] = "two"
    return Artifact(artifact.method, tensors, meta)


@pytest.mark.parametrize("how", ["missing", "module", "shape", "nan", "scaling"])
def test_tampered_artifacts_are_refused_before_any_weight_changes(fitted, how):
    model, _, method, artifact = fitted
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SteerbenchError, match="fit it again"):
        method.steer(model, tampered(artifact, how), 1.0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
