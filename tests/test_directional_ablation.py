import pytest
import torch
from helpers import NEGATIVE, POSITIVE, PROBE, logits

from steerbench.method import FitContext, get_method
from steerbench.model.adapter import ModelAdapter
from steerbench.model.capture import capture_last_token
from steerbench.testing import ARCHITECTURES, tiny_model


def fit(model, tokenizer, **params):
    method = get_method("directional-ablation", **params)
    return method, method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)


def all_positions_resid(model, tokenizer):
    """Residual stream after every layer at every position: [layers, batch, seq, d]."""
    adapter = ModelAdapter.from_model(model)
    seen = []
    handles = [
        layer.register_forward_hook(
            lambda _m, _a, out: seen.append(out[0] if isinstance(out, tuple) else out)
        )
        for layer in adapter.layers
    ]
    logits(model, tokenizer)
    for handle in handles:
        handle.remove()
    return torch.stack(seen)


def test_direction_is_the_normalised_mean_difference(tiny_qwen):
    model, tokenizer = tiny_qwen
    _, artifact = fit(model, tokenizer, layer=1)
    pos = capture_last_token(model, tokenizer, POSITIVE).resid_post[:, 1]
    neg = capture_last_token(model, tokenizer, NEGATIVE).resid_post[:, 1]
    manual = pos.mean(0) - neg.mean(0)
    torch.testing.assert_close(artifact.tensors["direction"], manual / manual.norm())


def test_strength_zero_is_identical_and_weights_restore(tiny_qwen):
    model, tokenizer = tiny_qwen
    method, artifact = fit(model, tokenizer)
    before = logits(model, tokenizer)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with method.steer(model, artifact, 0.0):
        assert torch.equal(logits(model, tokenizer), before)
    with method.steer(model, artifact, 1.0):
        assert not torch.allclose(logits(model, tokenizer), before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_full_ablation_leaves_no_component_along_r_at_any_layer(any_tiny):
    model, tokenizer = any_tiny
    method, artifact = fit(model, tokenizer)
    r = artifact.tensors["direction"]
    unsteered = all_positions_resid(model, tokenizer) @ r
    with method.steer(model, artifact, 1.0):
        steered = all_positions_resid(model, tokenizer) @ r
    assert unsteered.abs().max() > 1e-2
    assert steered.abs().max() < 1e-4 * unsteered.abs().max() + 1e-5


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_folded_weights_equal_a_per_write_projection_hook(arch, tied):
    """For s = 1 the folding equals projecting every write into the stream (embedding,
    attention, MLP) with hooks, and never touches the readout, tied embeddings included."""
    model, tokenizer = tiny_model(arch, tied=tied)
    method, artifact = fit(model, tokenizer)
    r = artifact.tensors["direction"]
    adapter = ModelAdapter.from_model(model)

    def project(x):
        return x - (x @ r).unsqueeze(-1) * r

    handles = [
        adapter.backbone.embed_tokens.register_forward_hook(lambda _m, _a, out: project(out))
    ]
    for layer in adapter.layers:
        handles.append(
            layer.self_attn.register_forward_hook(lambda _m, _a, out: (project(out[0]), *out[1:]))
        )
        handles.append(layer.mlp.register_forward_hook(lambda _m, _a, out: project(out)))
    hooked = logits(model, tokenizer, PROBE)
    for handle in handles:
        handle.remove()
    with method.steer(model, artifact, 1.0):
        torch.testing.assert_close(logits(model, tokenizer, PROBE), hooked, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tied_embeddings_keep_the_readout_and_restore_bit_for_bit(arch):
    """Arditi et al. orthogonalise what writes to the stream, not the unembedding: on a
    tied model the shared matrix must stay as it is while steered, and the logits must be
    the unchanged readout of the projected final stream."""
    model, tokenizer = tiny_model(arch, tied=True)
    assert ModelAdapter.from_model(model).embeddings_tied
    method, artifact = fit(model, tokenizer)
    readout = model.get_output_embeddings().weight
    state = {k: v.clone() for k, v in model.state_dict().items()}
    final = []
    handle = model.model.norm.register_forward_hook(lambda _m, _a, out: final.append(out))
    with method.steer(model, artifact, 1.0):
        assert torch.equal(readout, state["lm_head.weight"])
        steered = logits(model, tokenizer)
    handle.remove()
    expected = final[-1] @ state["lm_head.weight"].T
    if getattr(model.config, "final_logit_softcapping", None):
        cap = model.config.final_logit_softcapping
        expected = torch.tanh(expected / cap) * cap
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="boom"), method.steer(model, artifact, 1.0):
        raise RuntimeError("boom")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
