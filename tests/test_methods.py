import pytest
import torch
from helpers import NEGATIVE, POSITIVE, logits

from steerbench.errors import SteerbenchError
from steerbench.method import Artifact, FitContext, get_method
from steerbench.methods.caa import CAA
from steerbench.methods.cna import CNA, contrastive_delta, global_neuron_mask, select_top_k
from steerbench.methods.random_neurons import RandomNeurons
from steerbench.model.adapter import ModelAdapter, default_steering_layer
from steerbench.testing import ARCHITECTURES, tiny_model


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def fitted(tiny_qwen):
    model, tokenizer = tiny_qwen
    ctx = FitContext(model, tokenizer, batch_size=2)
    cna = CNA(top_k=12, neutral_prompts=None)
    return model, tokenizer, ctx, cna, cna.fit(ctx, POSITIVE, NEGATIVE)


def test_cna_strength_one_is_bit_identical(fitted):
    model, tokenizer, _, cna, artifact = fitted
    before = logits(model, tokenizer)
    with cna.steer(model, artifact, 1.0):
        assert torch.equal(logits(model, tokenizer), before)


def test_cna_strength_zero_equals_zeroing_those_activations_with_a_hook(fitted):
    model, tokenizer, _, cna, artifact = fitted
    adapter = ModelAdapter.from_model(model)
    layers, neurons = artifact.tensors["layers"], artifact.tensors["neurons"]
    handles = []
    for layer in torch.unique(layers).tolist():
        cols = neurons[layers == layer]

        def zero(_module, args, cols=cols):
            x = args[0].clone()
            x[..., cols] = 0
            return (x,)

        handles.append(adapter.down_proj(layer).register_forward_pre_hook(zero))
    hooked = logits(model, tokenizer)
    for handle in handles:
        handle.remove()
    with cna.steer(model, artifact, 0.0):
        steered = logits(model, tokenizer)
    torch.testing.assert_close(steered, hooked, atol=1e-6, rtol=0)
    assert not torch.allclose(steered, logits(model, tokenizer))


def test_cna_amplification_scales_the_neurons(fitted):
    model, _tokenizer, _, cna, artifact = fitted
    adapter = ModelAdapter.from_model(model)
    layer = int(artifact.tensors["layers"][0])
    neuron = int(artifact.tensors["neurons"][0])
    column = adapter.down_proj(layer).weight[:, neuron].clone()
    with cna.steer(model, artifact, 2.0):
        torch.testing.assert_close(adapter.down_proj(layer).weight[:, neuron], 2 * column)


def test_weights_restored_exactly_on_exit_and_on_exception(fitted):
    model, _tokenizer, ctx, cna, artifact = fitted
    caa = CAA()
    caa_artifact = caa.fit(ctx, POSITIVE, NEGATIVE)
    original = weights(model)
    for method, art, strength in ((cna, artifact, 0.0), (caa, caa_artifact, 3.0)):
        with method.steer(model, art, strength):
            pass
        with pytest.raises(RuntimeError, match="boom"), method.steer(model, art, strength):
            raise RuntimeError("boom")
        after = weights(model)
        assert after.keys() == original.keys()
        assert all(torch.equal(after[k], original[k]) for k in original)
    assert all(ModelAdapter.from_model(model).down_proj(i).bias is None for i in range(4))


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("name", ["cna", "random-neurons", "caa", "directional-ablation"])
def test_every_weight_editing_method_restores_tied_models_bit_for_bit(name, arch):
    """Tied embeddings share one tensor between input and readout: steering must leave the
    readout alone and restore every weight exactly, also on exceptions."""
    model, tokenizer = tiny_model(arch, tied=True)
    params = {"top_k": 12, "neutral_prompts": None} if name in ("cna", "random-neurons") else {}
    method = get_method(name, **params)
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    strength = {"cna": 0.0, "random-neurons": 0.0, "caa": 3.0, "directional-ablation": 1.0}[name]
    original = weights(model)
    before = logits(model, tokenizer)
    with method.steer(model, artifact, strength):
        assert torch.equal(model.get_output_embeddings().weight, original["lm_head.weight"])
        assert not torch.allclose(logits(model, tokenizer), before)  # it does steer
    with pytest.raises(RuntimeError, match="boom"), method.steer(model, artifact, strength):
        raise RuntimeError("boom")
    after = weights(model)
    assert all(torch.equal(after[k], original[k]) for k in original)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_top_k_on_hand_built_deltas_picks_the_known_neurons():
    positive = torch.zeros(4, 3, 10)
    negative = torch.zeros(4, 3, 10)
    positive[:, 2, 7] = 5.0  # largest
    negative[:, 0, 1] = 3.0  # second largest, negative delta
    positive[:, 1, 4] = 1.0  # third
    positive[:, 1, 5] = 0.5
    delta = contrastive_delta(positive, negative)
    layers, neurons = select_top_k(delta.abs(), 3)
    assert list(zip(layers.tolist(), neurons.tolist())) == [(2, 7), (0, 1), (1, 4)]
    layers, neurons = select_top_k(delta.abs(), 2, exclude_layers=[2])
    assert list(zip(layers.tolist(), neurons.tolist())) == [(0, 1), (1, 4)]


def test_global_filter_removes_a_planted_always_on_neuron():
    torch.manual_seed(0)
    acts = torch.randn(20, 2, 2000)
    acts[:, 1, 33] = 100.0  # always in its layer's top 0.1 %
    acts[:15, 0, 5] = 100.0  # on 75 % of prompts: below the 80 % threshold
    mask = global_neuron_mask(acts, top_fraction=0.001, min_share=0.8)
    assert mask[1, 33] and not mask[0, 5]
    assert int(mask.sum()) == 1


def test_cna_fit_drops_global_neurons_and_records_them(tiny_qwen, monkeypatch):
    model, tokenizer = tiny_qwen
    ctx = FitContext(model, tokenizer)
    plain = CNA(top_k=12, neutral_prompts=None).fit(ctx, POSITIVE, NEGATIVE)
    planted = (int(plain.tensors["layers"][0]), int(plain.tensors["neurons"][0]))
    mask = torch.zeros(4, 128, dtype=torch.bool)
    mask[planted] = True
    monkeypatch.setattr("steerbench.methods.cna.global_neuron_mask", lambda *a: mask)
    filtered = CNA(top_k=12).fit(ctx, POSITIVE, NEGATIVE)
    kept = set(zip(filtered.tensors["layers"].tolist(), filtered.tensors["neurons"].tolist()))
    assert planted not in kept and len(kept) == 11
    assert (
        int(filtered.tensors["global_layers"][0]),
        int(filtered.tensors["global_neurons"][0]),
    ) == planted
    assert filtered.metadata["summary"]["global_neurons_filtered"] == 1


def test_default_k_is_a_thousandth_of_all_neurons(tiny_qwen):
    model, tokenizer = tiny_qwen
    artifact = CNA(neutral_prompts=None, fraction=0.01).fit(
        FitContext(model, tokenizer), POSITIVE, NEGATIVE
    )
    assert artifact.metadata["summary"]["k"] == round(4 * 128 * 0.01)
    assert CNA().config.fraction == 0.001


def test_caa_vector_is_the_mean_difference_and_zero_strength_is_identical(fitted):
    model, tokenizer, ctx, _, _ = fitted
    caa = CAA()
    artifact = caa.fit(ctx, POSITIVE, NEGATIVE)
    pos = ctx.activations(POSITIVE).resid_post
    neg = ctx.activations(NEGATIVE).resid_post
    manual = pos.mean(0) - neg.mean(0)
    torch.testing.assert_close(artifact.tensors["vectors"], manual)
    assert artifact.metadata["layers"] == [default_steering_layer(4)] == [2]
    before = logits(model, tokenizer)
    with caa.steer(model, artifact, 0.0):
        assert torch.equal(logits(model, tokenizer), before)


def test_caa_adds_the_vector_to_the_residual_stream(any_tiny):
    model, tokenizer = any_tiny
    ctx = FitContext(model, tokenizer)
    caa = CAA(layers=[1])
    artifact = caa.fit(ctx, POSITIVE, NEGATIVE)
    vector = artifact.tensors["vectors"][1]
    layer = ModelAdapter.from_model(model).layers[1]
    handle = layer.register_forward_hook(
        lambda _m, _a, out: (
            (out[0] + 2.5 * vector, *out[1:]) if isinstance(out, tuple) else out + 2.5 * vector
        )
    )
    hooked = logits(model, tokenizer)
    handle.remove()
    with caa.steer(model, artifact, 2.5):
        torch.testing.assert_close(logits(model, tokenizer), hooked, atol=1e-5, rtol=1e-5)


def test_random_control_matches_circuit_size_and_layers(fitted):
    _, _, ctx, _, circuit = fitted
    control = RandomNeurons(top_k=12, neutral_prompts=None, seed=1)
    artifact = control.fit(ctx, POSITIVE, NEGATIVE)
    assert sorted(artifact.tensors["layers"].tolist()) == sorted(circuit.tensors["layers"].tolist())
    pairs = set(zip(artifact.tensors["layers"].tolist(), artifact.tensors["neurons"].tolist()))
    assert len(pairs) == 12
    again = RandomNeurons(top_k=12, neutral_prompts=None, seed=1).fit(ctx, POSITIVE, NEGATIVE)
    assert torch.equal(again.tensors["neurons"], artifact.tensors["neurons"])
    other = RandomNeurons(top_k=12, neutral_prompts=None, seed=2).fit(ctx, POSITIVE, NEGATIVE)
    assert not torch.equal(other.tensors["neurons"], artifact.tensors["neurons"])


def test_artifact_save_load_round_trip(fitted, tmp_path):
    *_, _cna, artifact = fitted
    artifact.save(tmp_path / "a")
    loaded = Artifact.load(tmp_path / "a")
    assert loaded.method == "cna"
    assert loaded.metadata == artifact.metadata
    assert loaded.tensors.keys() == artifact.tensors.keys()
    assert all(torch.equal(loaded.tensors[k], artifact.tensors[k]) for k in artifact.tensors)
    meta = loaded.metadata
    assert meta["hyperparameters"]["top_k"] == 12
    assert len(meta["positive_sha256"]) == 64 and meta["steerbench_version"]


def test_bad_method_inputs_are_clear_errors(fitted):
    *_, cna, artifact = fitted
    with pytest.raises(
        SteerbenchError, match="unknown method 'nope'; available: ace, caa, cast, cna"
    ):
        get_method("nope")
    with pytest.raises(SteerbenchError, match=r"unknown hyper-parameter.*topk.*allowed"):
        get_method("cna", topk=3)
    with pytest.raises(SteerbenchError, match="outside the domain"):
        cna.steer(None, artifact, -1.0)
    with pytest.raises(SteerbenchError, match="made by method 'cna'"):
        CAA().steer(None, artifact, 1.0)


def test_signed_and_standardized_selection():
    from steerbench.methods.cna import selection_scores

    positive = torch.tensor([[[4.0, 0.0, 1.0]], [[6.0, 0.0, 1.2]]])  # [n=2, L=1, d=3]
    negative = torch.tensor([[[0.0, 4.0, 0.0]], [[0.0, 12.0, 0.2]]])
    assert select_top_k(selection_scores(positive, negative, "abs"), 1)[1].tolist() == [1]
    assert select_top_k(selection_scores(positive, negative, "signed"), 1)[1].tolist() == [0]
    # standardized: |delta| / pooled sd. Neuron 2: delta 1.0, pooled sd 0.1414 -> 7.07 wins
    scores = selection_scores(positive, negative, "standardized")
    torch.testing.assert_close(scores[0, 2], torch.tensor(1.0 / 0.02**0.5), rtol=1e-3, atol=0)
    assert select_top_k(scores, 1)[1].tolist() == [2]


def test_mean_ablation_replaces_activations_by_their_negative_mean(tiny_qwen):
    model, tokenizer = tiny_qwen
    ctx = FitContext(model, tokenizer)
    cna = CNA(top_k=10, neutral_prompts=None, intervention="mean")
    artifact = cna.fit(ctx, POSITIVE, NEGATIVE)
    layers, neurons = artifact.tensors["layers"], artifact.tensors["neurons"]
    means = artifact.tensors["mean_negative"]
    adapter = ModelAdapter.from_model(model)
    before = logits(model, tokenizer)
    with cna.steer(model, artifact, 1.0):
        assert torch.equal(logits(model, tokenizer), before)
    for m in (0.0, 0.5):
        handles = []
        for layer in torch.unique(layers).tolist():
            cols = neurons[layers == layer]
            mu = means[layer, cols]

            def replace(_module, args, cols=cols, mu=mu, m=m):
                x = args[0].clone()
                x[..., cols] = mu + m * (x[..., cols] - mu)
                return (x,)

            handles.append(adapter.down_proj(layer).register_forward_pre_hook(replace))
        expected = logits(model, tokenizer)
        for handle in handles:
            handle.remove()
        with cna.steer(model, artifact, m):
            torch.testing.assert_close(logits(model, tokenizer), expected, atol=1e-5, rtol=1e-5)
    assert all(adapter.down_proj(i).bias is None for i in range(adapter.n_layers))


def test_bad_variant_names_are_clear_errors():
    with pytest.raises(SteerbenchError, match="selection must be one of abs, signed"):
        get_method("cna", selection="biggest")
