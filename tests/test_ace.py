"""ACE (methods/ace.py): the contract, the fit, and the defining maths at every edited layer."""

import functools

import pytest
import torch
from helpers import NEGATIVE, POSITIVE, PROBE, logits

from steerbench.errors import SteerbenchError
from steerbench.method import FitContext, get_method
from steerbench.model.adapter import ModelAdapter
from steerbench.model.capture import capture_last_token
from steerbench.testing import ARCHITECTURES, check_method, tiny_model

SEVERAL = PROBE + NEGATIVE + ["Sure", "Explain how a transformer predicts the next token."]


@functools.cache
def cached_model(arch):
    return tiny_model(arch)


def fit(model, tokenizer, **params):
    method = get_method("ace", **params)
    return method, method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_keeps_the_contract_on_every_architecture(arch):
    model, tokenizer = tiny_model(arch, seed=1)
    check_method(get_method("ace"), model, tokenizer)
    if arch == "qwen2":
        check_method(get_method("ace", layers="direction"), model, tokenizer, strength=1.0)


def test_keeps_the_contract_scoped_to_generated_tokens():
    model, tokenizer = tiny_model("llama", seed=2)
    check_method(get_method("ace", scope="generation"), model, tokenizer)
    method, artifact = fit(model, tokenizer, scope="generation")
    before = logits(model, tokenizer)
    with method.steer(model, artifact, -1.0):  # a prompt pass: nothing is edited
        assert torch.equal(logits(model, tokenizer), before)


def test_fit_reuses_the_direction_and_projects_each_layers_means(tiny_qwen):
    model, tokenizer = tiny_qwen
    _, artifact = fit(model, tokenizer, layer=1)
    ablation = get_method("directional-ablation", layer=1).fit(
        FitContext(model, tokenizer), POSITIVE, NEGATIVE
    )
    r = artifact.tensors["direction"]
    assert torch.equal(r, ablation.tensors["direction"])
    pos = capture_last_token(model, tokenizer, POSITIVE).resid_post
    neg = capture_last_token(model, tokenizer, NEGATIVE).resid_post
    for layer in range(pos.shape[1]):
        mu_neg, mu_pos = neg[:, layer].mean(0), pos[:, layer].mean(0)
        torch.testing.assert_close(artifact.tensors["reference"][layer], torch.dot(mu_neg, r))
        torch.testing.assert_close(
            artifact.tensors["difference"][layer], torch.dot(mu_pos - mu_neg, r)
        )
    # the unit of alpha at the direction layer is the mean difference's norm
    difference = pos[:, 1].mean(0) - neg[:, 1].mean(0)
    torch.testing.assert_close(artifact.tensors["difference"][1], difference.norm())
    assert artifact.metadata["edit_layers"] == [0, 1, 2, 3]


def layer_outputs(model, tokenizer, prompts, steering):
    """Every layer's output at every position, as the layer computed it (``before``, hooks
    registered ahead of the method's) and as the stream carries it on (``after``), inside the
    ``steering`` context."""
    adapter = ModelAdapter.from_model(model)
    before, after = {}, {}

    def recorder(sink, layer):
        def hook(_m, _a, out):
            sink[layer] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        return hook

    handles = [
        layer.register_forward_hook(recorder(before, i)) for i, layer in enumerate(adapter.layers)
    ]
    with steering:
        handles += [
            layer.register_forward_hook(recorder(after, i))
            for i, layer in enumerate(adapter.layers)
        ]
        logits(model, tokenizer, prompts)
    for handle in handles:
        handle.remove()
    return before, after


@pytest.mark.parametrize("layers", ["all", "direction", [0, 3]])
@pytest.mark.parametrize("strength", [-1.0, 1.0, 0.5, -0.25])
@pytest.mark.parametrize("arch", ["qwen2", "gemma3_text"])
def test_the_component_along_r_is_moved_to_the_mean_and_nothing_else_changes(
    arch, strength, layers
):
    """At each edited layer's output, for every token of several prompts: x.r becomes
    (1 - |s|) x.r + |s| t, with t the negative prompts' mean projection (s < 0) or the
    positive prompts' (s > 0), measured here independently; x - (x.r) r is unchanged.
    Layers not edited pass their output on as computed."""
    model, tokenizer = cached_model(arch)
    method, artifact = fit(model, tokenizer, layers=layers)
    r = artifact.tensors["direction"]
    means = capture_last_token(
        model, tokenizer, POSITIVE if strength > 0 else NEGATIVE
    ).resid_post.mean(0)
    edited = {"all": [0, 1, 2, 3], "direction": [2], "[0, 3]": [0, 3]}[str(layers)]
    before, after = layer_outputs(
        model, tokenizer, SEVERAL, method.steer(model, artifact, strength)
    )
    mix = abs(strength)
    for layer in range(4):
        x, y = before[layer], after[layer]
        if layer not in edited:
            assert torch.equal(x, y)
            continue
        target = torch.dot(means[layer], r)
        expected = (1 - mix) * (x @ r) + mix * target
        torch.testing.assert_close(y @ r, expected, atol=1e-4, rtol=0)
        if mix == 1.0:  # every token, every prompt: the same value
            torch.testing.assert_close(
                y @ r, torch.full_like(y @ r, float(target)), atol=1e-4, rtol=0
            )
        complement = (x - (x @ r).unsqueeze(-1) * r) - (y - (y @ r).unsqueeze(-1) * r)
        assert complement.abs().max() < 1e-4
    assert (before[edited[-1]] @ r).std() > 1e-2  # the edit had something to remove


def test_alphas_choose_other_targets(tiny_qwen):
    model, tokenizer = tiny_qwen
    method, artifact = fit(model, tokenizer, layers="direction", alpha_add=2.0, alpha_remove=-1.0)
    r, ref, diff = (artifact.tensors[k] for k in ("direction", "reference", "difference"))
    for strength, alpha in ((1.0, 2.0), (-1.0, -1.0)):
        _, after = layer_outputs(model, tokenizer, SEVERAL, method.steer(model, artifact, strength))
        target = ref[2] + alpha * diff[2]
        torch.testing.assert_close(
            after[2] @ r, torch.full_like(after[2] @ r, float(target)), atol=1e-4, rtol=0
        )


def test_differs_from_directional_ablation_by_the_reference(tiny_qwen):
    """At one edited layer, ACE at -1 leaves the reference's component where directional
    ablation would leave 0: the affine, not the linear, view."""
    model, tokenizer = tiny_qwen
    method, artifact = fit(model, tokenizer, layers="direction")
    reference = float(artifact.tensors["reference"][2])
    assert abs(reference) > 1e-2
    _, after = layer_outputs(model, tokenizer, SEVERAL, method.steer(model, artifact, -1.0))
    component = after[2] @ artifact.tensors["direction"]
    torch.testing.assert_close(component, torch.full_like(component, reference), atol=1e-4, rtol=0)


def test_hooks_are_removed_on_exit_and_on_error(tiny_qwen):
    model, tokenizer = tiny_qwen
    method, artifact = fit(model, tokenizer)
    adapter = ModelAdapter.from_model(model)
    with method.steer(model, artifact, 1.0):
        assert all(len(layer._forward_hooks) == 1 for layer in adapter.layers)
    with pytest.raises(RuntimeError, match="boom"), method.steer(model, artifact, -1.0):
        raise RuntimeError("boom")
    assert all(not layer._forward_hooks for layer in adapter.layers)


@pytest.mark.parametrize("layers", ["some", [], [4], [-1]])
def test_bad_layers_are_one_line_errors(layers):
    model, _ = tiny_model("qwen2")
    with pytest.raises(SteerbenchError, match="layers"):
        method = get_method("ace", layers=layers)
        method.check_model(ModelAdapter.from_model(model))


def test_strengths_outside_the_mix_are_refused(tiny_qwen):
    model, tokenizer = tiny_qwen
    method, artifact = fit(model, tokenizer)
    for bad in (1.5, -2.0):
        with pytest.raises(SteerbenchError, match="outside the domain"):
            method.steer(model, artifact, bad)
