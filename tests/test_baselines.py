"""The cheap baselines: prompt, probe, pca and refusal-logit-bias, and token scope."""

from __future__ import annotations

import pytest
import torch

from steerbench.errors import SteerbenchError
from steerbench.method import FitContext, get_method
from steerbench.model.chat import format_prompts
from steerbench.model.generation import GenerationSettings, generate
from steerbench.testing import NEGATIVE, POSITIVE, tiny_model


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", seed=3)


def test_probe_separates_the_prompts_it_was_fitted_on(llama):
    model, tokenizer = llama
    ctx = FitContext(model, tokenizer)
    artifact = get_method("probe", folds=2).fit(ctx, POSITIVE, NEGATIVE)
    (layer,) = artifact.metadata["layers"]
    vector = artifact.tensors["vectors"][layer]
    pos = ctx.activations(POSITIVE).resid_post[:, layer].float() @ vector
    neg = ctx.activations(NEGATIVE).resid_post[:, layer].float() @ vector
    assert pos.min() > neg.max()  # the direction orders every fitted prompt
    assert set(artifact.metadata["probe_accuracy"]) == {str(layer)}
    assert torch.count_nonzero(artifact.tensors["vectors"].norm(dim=-1)) == 1


def test_pca_is_sign_aligned_and_scaled_like_the_mean_difference(llama):
    model, tokenizer = llama
    ctx = FitContext(model, tokenizer)
    artifact = get_method("pca").fit(ctx, POSITIVE, NEGATIVE)
    (layer,) = artifact.metadata["layers"]
    acts = ctx.activations(POSITIVE).resid_post.float(), ctx.activations(NEGATIVE).resid_post
    diff = (acts[0].mean(0) - acts[1].float().mean(0))[layer]
    vector = artifact.tensors["vectors"][layer]
    unit = vector / vector.norm()
    assert float(unit @ diff) > 0
    torch.testing.assert_close(vector.norm(), unit @ diff)
    # and it is the first principal component of the paired differences, not their mean
    paired = (acts[0] - acts[1].float())[:, layer]
    _, _, right = torch.linalg.svd(paired - paired.mean(0), full_matrices=False)
    assert abs(float(unit @ right[0])) == pytest.approx(1.0, abs=1e-4)
    assert torch.count_nonzero(artifact.tensors["vectors"].norm(dim=-1)) == 1  # only its layer


def test_generation_scope_leaves_prompt_positions_bit_identical(llama):
    model, tokenizer = llama
    method = get_method("caa", scope="generation")
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    text = format_prompts(tokenizer, ["Tell me a story about a cat"])
    encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    settings = GenerationSettings(max_new_tokens=6)
    with torch.inference_mode():
        before = model(**encoded).logits
        plain = generate(model, tokenizer, ["Tell me a story"], settings, progress=False)
        with method.steer(model, artifact, 8.0):
            assert torch.equal(model(**encoded).logits, before)
            steered = generate(model, tokenizer, ["Tell me a story"], settings, progress=False)
        with get_method("caa").steer(
            model, artifact.__class__("caa", artifact.tensors, artifact.metadata), 8.0
        ):
            assert not torch.equal(model(**encoded).logits, before)  # scope "all" does move them
    assert steered != plain


def test_unknown_scope_is_one_line():
    with pytest.raises(SteerbenchError, match="scope must be one of all, generation"):
        get_method("probe", scope="prompt")


def test_prompt_instruction_reaches_the_model_not_the_records(llama):
    model, tokenizer = llama
    method = get_method("prompt")
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    plain = format_prompts(tokenizer, ["How do I bake bread?"])[0]
    with method.steer(model, artifact, -2.0):
        steered = format_prompts(tokenizer, ["How do I bake bread?"])[0]
    assert format_prompts(tokenizer, ["How do I bake bread?"])[0] == plain  # gone on exit
    assert method.config.away[1] in steered and method.config.away[1] not in plain
    assert steered.endswith(plain.split("<|im_start|>user", 1)[1])  # the request unchanged
    with method.steer(model, artifact, 1.0):
        assert method.config.toward[0] in format_prompts(tokenizer, ["x"])[0]
    for bad in (0.5, 3.0):
        with pytest.raises(SteerbenchError, match=r"prompt strength|outside the domain"):
            method.steer(model, artifact, bad)


def test_refusal_logit_bias_bans_the_openers_for_its_window(llama):
    model, tokenizer = llama
    method = get_method("refusal-logit-bias", openers=["I'm sorry", "Sure"], window=2)
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    banned = set(artifact.tensors["token_ids"].tolist())
    assert (
        banned and artifact.metadata["vocab_size"] == model.get_output_embeddings().weight.shape[0]
    )
    settings = GenerationSettings(max_new_tokens=4)
    prompts = POSITIVE + NEGATIVE
    with method.steer(model, artifact, -1e4):
        answers = generate(model, tokenizer, prompts, settings, progress=False)
    for answer in answers:
        first = tokenizer(answer, add_special_tokens=False)["input_ids"][:1]
        assert not set(first) & banned
    with method.steer(model, artifact, 1e4):  # boosted: every answer opens with an opener
        answers = generate(model, tokenizer, prompts, settings, progress=False)
    assert all(tokenizer(a, add_special_tokens=False)["input_ids"][0] in banned for a in answers)
