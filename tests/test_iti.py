"""ITI (methods/iti.py): the contract, the head selection by probe accuracy, the mass-mean
directions and the defining maths, head_output += s sigma d folded into o_proj's bias."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import NEGATIVE, POSITIVE, PROBE, logits
from torch import nn

from steerbench.errors import SteerbenchError
from steerbench.method import FitContext, get_method
from steerbench.methods.iti import (
    capture_head_outputs,
    fit_logistic,
    mass_mean_directions,
    probe_accuracies,
    select_heads,
)
from steerbench.model.chat import format_prompts
from steerbench.testing import ARCHITECTURES, check_method, tiny_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_iti_keeps_the_contract_with_its_defaults(arch):
    model, tokenizer = tiny_model(arch, seed=1)
    check_method(get_method("iti"), model, tokenizer)


def test_iti_keeps_the_contract_with_few_heads_and_tied_embeddings():
    model, tokenizer = tiny_model("llama", seed=3, tied=True)
    check_method(get_method("iti", top_k=3, folds=3), model, tokenizer, strength=5.0)


@pytest.fixture(scope="module")
def fitted():
    model, tokenizer = tiny_model("qwen2", seed=4)
    method = get_method("iti", top_k=3, folds=3)
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    return model, tokenizer, method, artifact


def test_default_top_k_is_capped_by_the_heads_of_a_tiny_model(fitted):
    model, tokenizer, _, _ = fitted
    artifact = get_method("iti").fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    pairs = set(zip(artifact.tensors["layers"].tolist(), artifact.tensors["heads"].tolist()))
    assert artifact.metadata["summary"]["k"] == 16 and len(pairs) == 16  # 4 layers x 4 heads


def _head_inputs(model, tokenizer, prompt: str) -> torch.Tensor:
    """o_proj inputs at the last token of one unpadded prompt: [n_layers, 4, 16]."""
    seen = []
    hooks = [
        layer.self_attn.o_proj.register_forward_pre_hook(
            lambda _m, args: seen.append(args[0][0, -1].clone())
        )
        for layer in model.model.layers
    ]
    try:
        text = format_prompts(tokenizer, [prompt])
        with torch.inference_mode():
            model(**tokenizer(text, return_tensors="pt", add_special_tokens=False))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(seen).view(len(seen), 4, 16)


def test_capture_is_each_heads_last_real_token_output_despite_padding(fitted):
    model, tokenizer, _, _ = fitted
    prompts = ["Hi", "Write a long poem about the sea, the sky and the wind"]
    captured = capture_head_outputs(FitContext(model, tokenizer), prompts)
    assert captured.shape == (2, 4, 4, 16)
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(captured[row], _head_inputs(model, tokenizer, prompt))


def _synthetic(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 2 layers, 3 heads, 4] activations where only heads (0, 1) and (1, 2) separate."""
    gen = torch.Generator().manual_seed(seed)
    positive = torch.randn(n, 2, 3, 4, generator=gen)
    negative = torch.randn(n, 2, 3, 4, generator=gen)
    positive[:, 0, 1] += torch.tensor([8.0, 0.0, 0.0, 0.0])
    positive[:, 1, 2] += torch.tensor([0.0, -6.0, 6.0, 0.0])
    return positive, negative


def test_the_chosen_heads_are_those_of_highest_cross_validated_accuracy():
    positive, negative = _synthetic()
    accuracy = probe_accuracies(positive, negative, folds=4)
    assert accuracy[0, 1] >= 0.95 and accuracy[1, 2] >= 0.95
    noise = accuracy.clone()
    noise[0, 1] = noise[1, 2] = 0.0
    assert float(noise.max()) <= 0.8
    _, _, separation = mass_mean_directions(positive, negative)
    layers, heads = select_heads(accuracy, separation, 2)
    assert set(zip(layers.tolist(), heads.tolist())) == {(0, 1), (1, 2)}
    layers, heads = select_heads(accuracy, separation, 6)
    ranked = accuracy[layers, heads]
    assert torch.all(ranked[:-1] >= ranked[1:])  # best first


def test_the_batched_probes_are_scikit_learns_logistic_regression():
    """Coefficients and cross-validated accuracies agree with a StandardScaler +
    LogisticRegression pipeline scored by cross_val_score on the same seeded folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    gen = torch.Generator().manual_seed(2)
    positive = torch.randn(30, 2, 3, 8, generator=gen)
    negative = torch.randn(18, 2, 3, 8, generator=gen)  # unbalanced: a non-zero intercept
    positive[..., 0] += torch.linspace(0.0, 1.5, 6).view(2, 3)  # accuracies from ~0.5 up
    features = torch.cat([positive, negative]).double().numpy()
    labels = np.r_[np.ones(30), np.zeros(18)]
    expected = np.zeros((2, 3))
    for layer, head in np.ndindex(2, 3):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-12))
        splitter = StratifiedKFold(5, shuffle=True, random_state=7)
        expected[layer, head] = cross_val_score(
            probe, features[:, layer, head], labels, cv=splitter
        ).mean()
    accuracy = probe_accuracies(positive, negative, folds=5, regularisation=0.5, seed=7)
    np.testing.assert_allclose(accuracy.numpy(), expected, atol=1e-6)
    assert len(np.unique(expected)) >= 4  # the accuracies do differ between heads

    x = StandardScaler().fit_transform(features[:, 1, 2])
    reference = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000).fit(x, labels)
    w = fit_logistic(torch.from_numpy(x)[None], torch.from_numpy(labels), 0.5)[0].numpy()
    np.testing.assert_allclose(w[:-1], reference.coef_[0], atol=1e-6)
    np.testing.assert_allclose(w[-1], reference.intercept_[0], atol=1e-6)
    assert abs(reference.intercept_[0]) > 0.1


def test_accuracy_outranks_separation_which_only_breaks_ties():
    accuracy = torch.tensor([[0.6, 1.0, 0.9], [1.0, 0.5, 0.9]])
    separation = torch.tensor([[9.0, 1.0, 2.0], [3.0, 8.0, 0.5]])
    layers, heads = select_heads(accuracy, separation, 4)
    assert list(zip(layers.tolist(), heads.tolist())) == [(1, 0), (0, 1), (0, 2), (1, 2)]


def test_directions_are_normalised_mass_means_and_sigma_the_projected_std():
    positive, negative = _synthetic(n=12, seed=1)
    directions, sigma, separation = mass_mean_directions(positive, negative)
    pos, neg = positive.double().numpy(), negative.double().numpy()
    for layer in range(2):
        for head in range(3):
            diff = pos[:, layer, head].mean(0) - neg[:, layer, head].mean(0)
            unit = diff / np.linalg.norm(diff)
            both = np.concatenate([pos[:, layer, head], neg[:, layer, head]])
            std = np.std(both @ unit)
            np.testing.assert_allclose(directions[layer, head], unit, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(sigma[layer, head], std, rtol=1e-5)
            np.testing.assert_allclose(separation[layer, head], np.linalg.norm(diff) / std, 1e-4)


def _expected_bias(model, artifact, strength: float, layer: int) -> torch.Tensor:
    """Sum over the chosen heads of ``layer`` of W_o[:, head slice] @ (s sigma d)."""
    weight = model.model.layers[layer].self_attn.o_proj.weight.detach()
    total = torch.zeros(weight.shape[0])
    tensors = artifact.tensors
    for i, (at, head) in enumerate(zip(tensors["layers"].tolist(), tensors["heads"].tolist())):
        if at == layer:
            shift = strength * tensors["sigma"][i] * tensors["directions"][i]
            total += weight[:, head * 16 : (head + 1) * 16] @ shift
    return total


def test_the_folded_bias_is_the_sum_of_the_chosen_heads_shifts(fitted):
    model, _, method, artifact = fitted
    chosen = set(artifact.tensors["layers"].tolist())
    with method.steer(model, artifact, 3.0):
        for layer, block in enumerate(model.model.layers):
            bias = block.self_attn.o_proj.bias
            if layer not in chosen:
                assert bias is None  # a layer with no chosen head is not touched
                continue
            torch.testing.assert_close(bias, _expected_bias(model, artifact, 3.0, layer))
    assert all(block.self_attn.o_proj.bias is None for block in model.model.layers)


def test_a_head_whose_direction_is_zeroed_loses_exactly_its_term(fitted):
    model, _, method, artifact = fitted
    layer, head = int(artifact.tensors["layers"][0]), int(artifact.tensors["heads"][0])
    with method.steer(model, artifact, 2.0):
        full = model.model.layers[layer].self_attn.o_proj.bias.detach().clone()
    tensors = dict(artifact.tensors)
    tensors["directions"] = tensors["directions"].clone()
    tensors["directions"][0] = 0.0
    reduced = type(artifact)(artifact.method, tensors, artifact.metadata)
    with method.steer(model, reduced, 2.0):
        bias = model.model.layers[layer].self_attn.o_proj.bias
        less = torch.zeros(64) if bias is None else bias.detach()
    weight = model.model.layers[layer].self_attn.o_proj.weight.detach()
    term = weight[:, head * 16 : (head + 1) * 16] @ (
        2.0 * artifact.tensors["sigma"][0] * artifact.tensors["directions"][0]
    )
    torch.testing.assert_close(full - less, term)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_steering_equals_shifting_the_chosen_head_outputs_at_every_position(arch):
    """The fold against the definition: a pre-hook adds s sigma d to each chosen head's
    output (Gemma 3 included, whose attention output is normalised after o_proj)."""
    model, tokenizer = tiny_model(arch, seed=5)
    method = get_method("iti", top_k=5, folds=3)
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    tensors, strength = artifact.tensors, -4.0

    def shift(layer):
        def hook(_module, args):
            x = args[0].clone().view(*args[0].shape[:-1], 4, 16)
            for i, at in enumerate(tensors["layers"].tolist()):
                if at == layer:
                    head = int(tensors["heads"][i])
                    x[..., head, :] += strength * tensors["sigma"][i] * tensors["directions"][i]
            return (x.view(args[0].shape),)

        return hook

    blocks = model.model.layers
    hooks = [b.self_attn.o_proj.register_forward_pre_hook(shift(i)) for i, b in enumerate(blocks)]
    try:
        defined = logits(model, tokenizer, PROBE)
    finally:
        for hook in hooks:
            hook.remove()
    before = logits(model, tokenizer, PROBE)
    with method.steer(model, artifact, strength):
        folded = logits(model, tokenizer, PROBE)
    assert not torch.allclose(folded, before)
    torch.testing.assert_close(folded, defined, rtol=1e-5, atol=1e-5)
    with method.steer(model, artifact, 0.0):
        assert torch.equal(logits(model, tokenizer, PROBE), before)


def test_an_existing_o_proj_bias_is_shifted_and_put_back_as_it_was(fitted):
    model, _, method, artifact = fitted
    layer = int(artifact.tensors["layers"][0])
    proj = model.model.layers[layer].self_attn.o_proj
    original = nn.Parameter(torch.randn(64), requires_grad=False)
    proj.bias = original
    saved = original.detach().clone()
    try:
        with method.steer(model, artifact, 5.0):
            expected = saved + _expected_bias(model, artifact, 5.0, layer)
            torch.testing.assert_close(proj.bias, expected)
        assert proj.bias is original and torch.equal(proj.bias, saved)
    finally:
        proj.bias = None


def test_an_artifact_of_another_head_layout_is_refused(fitted):
    model, _, method, artifact = fitted
    tensors = dict(artifact.tensors)
    tensors["directions"] = torch.zeros(len(tensors["sigma"]), 8)
    other = type(artifact)(artifact.method, tensors, artifact.metadata)
    with pytest.raises(SteerbenchError, match="head_dim"):
        method.steer(model, other, 5.0)


def test_too_few_prompts_to_cross_validate_is_one_line():
    model, tokenizer = tiny_model("qwen2")
    with pytest.raises(SteerbenchError, match="at least 2"):
        get_method("iti").fit(FitContext(model, tokenizer), POSITIVE[:1], NEGATIVE)
