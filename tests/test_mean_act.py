"""Mean-AcT (linear activation transport of MLP neurons): its defining maths and its contract."""

import pytest
import torch
from helpers import NEGATIVE, POSITIVE, PROBE, logits
from transformers import AutoModelForCausalLM

from steerbench.errors import SteerbenchError
from steerbench.method import FitContext, get_method
from steerbench.methods.mean_act import default_transport_layers, transport_coefficients
from steerbench.model.adapter import ModelAdapter
from steerbench.model.capture import capture_last_token
from steerbench.testing import ARCHITECTURES, check_method, tiny_config, tiny_model, tiny_tokenizer


def fit(model, tokenizer, **params):
    """Fit mean-act; every neuron of the layers given unless the test picks a fraction."""
    params.setdefault("fraction", None)
    method = get_method("mean-act", **params)
    return method, method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)


def narrow_model(arch="qwen2", *, d_mlp=32, mlp_bias=False):
    """A tiny model whose MLP is narrower than the stream (d_mlp < d_model), so that
    ``down_proj`` has full column rank and its input can be read back from its output."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(3)
    config = tiny_config(arch, len(tokenizer))
    config.intermediate_size = d_mlp
    config.pad_token_id = tokenizer.pad_token_id
    if mlp_bias:
        config.mlp_bias = True
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    if mlp_bias:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.mlp.down_proj.bias.normal_()
    return model, tokenizer


def down_proj_io(model, tokenizer, prompts, layers):
    """{layer: (input, output)} of ``down_proj`` at every position of ``prompts``."""
    adapter = ModelAdapter.from_model(model)
    seen = {}
    handles = [
        adapter.down_proj(layer).register_forward_hook(
            lambda _m, args, out, layer=layer: seen.__setitem__(layer, (args[0], out))
        )
        for layer in layers
    ]
    try:
        logits(model, tokenizer, prompts)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def independent_stats(model, tokenizer, layer):
    pos = capture_last_token(model, tokenizer, POSITIVE).mlp_in[:, layer].double()
    neg = capture_last_token(model, tokenizer, NEGATIVE).mlp_in[:, layer].double()
    return pos.mean(0), pos.std(0, correction=0), neg.mean(0), neg.std(0, correction=0)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_keeps_the_method_contract(arch):
    model, tokenizer = tiny_model(arch, seed=1)
    check_method(get_method("mean-act"), model, tokenizer)


def test_a_sparse_circuit_keeps_the_contract_in_the_removing_direction(tiny_qwen):
    model, tokenizer = tiny_qwen
    method = get_method("mean-act", layers=[0, 2], top_k=10)
    check_method(method, model, tokenizer, strength=-1.0)


def test_negatives_transported_at_one_have_the_positive_statistics():
    """The defining property, read from the steered model itself: at s = 1 the activations
    that reach ``down_proj`` of the first transported layer (solved from its output, W has
    full column rank) have, over the negative prompts' last tokens, the positive prompts'
    mean and standard deviation per neuron."""
    model, tokenizer = narrow_model()
    layer = 1
    method, artifact = fit(model, tokenizer, layers=[layer, 3])
    mu_p, sd_p, mu_n, sd_n = independent_stats(model, tokenizer, layer)
    assert (sd_p - sd_n).abs().max() > 1e-2 and (mu_p - mu_n).abs().max() > 1e-2
    proj = ModelAdapter.from_model(model).down_proj(layer)
    weight = proj.weight.detach().double().clone()
    with method.steer(model, artifact, 1.0):
        _, out = down_proj_io(model, tokenizer, NEGATIVE, [layer])[layer]
    transported = torch.linalg.lstsq(weight, out[:, -1].double().T).solution.T
    assert torch.allclose(weight @ transported.T, out[:, -1].double().T, atol=1e-4)
    torch.testing.assert_close(transported.mean(0), mu_p, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(transported.std(0, correction=0), sd_p, atol=1e-4, rtol=1e-4)


def test_artifact_holds_the_per_neuron_statistics(tiny_qwen):
    model, tokenizer = tiny_qwen
    _, artifact = fit(model, tokenizer, layers="all")
    for layer in range(4):
        mu_p, sd_p, mu_n, sd_n = independent_stats(model, tokenizer, layer)
        for name, expected in zip(
            ("mean_positive", "std_positive", "mean_negative", "std_negative"),
            (mu_p, sd_p, mu_n, sd_n),
        ):
            torch.testing.assert_close(artifact.tensors[name][layer].double(), expected)
    assert len(artifact.tensors["layers"]) == 4 * 128


@pytest.mark.parametrize("strength", [1.0, -1.0, 0.5, 2.0])
@pytest.mark.parametrize("mlp_bias", [False, True], ids=["no-bias", "bias"])
def test_fold_equals_interpolating_to_the_transport_map(strength, mlp_bias):
    """At every position and every transported layer, the steered ``down_proj`` output is
    the original ``down_proj`` applied to (1 - s) a + s T(a), T(a) = mu_p + sd_p/sd_n (a - mu_n)
    (a: the input it receives while steered, earlier layers' steering included)."""
    model, tokenizer = narrow_model("llama", mlp_bias=mlp_bias)
    layers = [0, 2, 3]
    method, artifact = fit(model, tokenizer, layers=layers)
    adapter = ModelAdapter.from_model(model)
    projs = {layer: adapter.down_proj(layer) for layer in layers}
    originals = {
        layer: (proj.weight.detach().clone(), None if proj.bias is None else proj.bias.clone())
        for layer, proj in projs.items()
    }
    with method.steer(model, artifact, strength):
        seen = down_proj_io(model, tokenizer, PROBE, layers)
    for layer in layers:
        mu_p, sd_p, mu_n, sd_n = (t.float() for t in independent_stats(model, tokenizer, layer))
        a, out = seen[layer]
        moved = (1 - strength) * a + strength * (mu_p + sd_p / sd_n * (a - mu_n))
        weight, bias = originals[layer]
        expected = torch.nn.functional.linear(moved, weight, bias)
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mlp_bias", [False, True], ids=["no-bias", "bias"])
def test_neutral_is_identical_and_exit_restores_bit_for_bit(mlp_bias):
    model, tokenizer = narrow_model("llama", mlp_bias=mlp_bias)
    method, artifact = fit(model, tokenizer, layers="all")
    adapter = ModelAdapter.from_model(model)
    biases = [adapter.down_proj(layer).bias for layer in range(4)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = logits(model, tokenizer)
    with method.steer(model, artifact, 0.0):
        assert torch.equal(logits(model, tokenizer), before)
        assert [adapter.down_proj(layer).bias for layer in range(4)] == biases
    with pytest.raises(RuntimeError, match="boom"), method.steer(model, artifact, 1.0):
        assert not torch.allclose(logits(model, tokenizer), before)
        assert all(adapter.down_proj(layer).bias is not None for layer in range(4))
        raise RuntimeError("boom")
    assert all(adapter.down_proj(layer).bias is bias for layer, bias in enumerate(biases))
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert torch.equal(logits(model, tokenizer), before)


def test_top_k_transports_only_the_largest_mean_differences(tiny_qwen):
    model, tokenizer = tiny_qwen
    method, artifact = fit(model, tokenizer, layers=[1, 2], top_k=6)
    delta = (artifact.tensors["mean_positive"] - artifact.tensors["mean_negative"]).abs()
    delta[[0, 3]] = -1.0
    best = set(divmod(int(i), 128) for i in torch.topk(delta.flatten(), 6).indices)
    chosen = set(zip(artifact.tensors["layers"].tolist(), artifact.tensors["neurons"].tolist()))
    assert chosen == best
    adapter = ModelAdapter.from_model(model)
    weights = [adapter.down_proj(layer).weight.clone() for layer in range(4)]
    with method.steer(model, artifact, 1.0):
        changed = {
            (layer, int(col))
            for layer in range(4)
            for col in torch.nonzero(
                (adapter.down_proj(layer).weight != weights[layer]).any(dim=0)
            ).flatten()
        }
    assert changed == chosen


def test_fraction_on_all_layers_picks_cnas_neurons(tiny_qwen):
    """``layers: all`` with CNA's fraction transports exactly CNA's ranked circuit (without
    CNA's global-neuron filter), so the two methods differ only in the intervention."""
    model, tokenizer = tiny_qwen
    _, transported = fit(model, tokenizer, layers="all", fraction=0.02)
    cna = get_method("cna", fraction=0.02, neutral_prompts=None)
    circuit = cna.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    assert torch.equal(transported.tensors["layers"], circuit.tensors["layers"])
    assert torch.equal(transported.tensors["neurons"], circuit.tensors["neurons"])


def test_constant_negative_neuron_is_only_mean_shifted():
    stats = {
        "mean_positive": torch.tensor([2.0, 1.0]),
        "std_positive": torch.tensor([3.0, 0.5]),
        "mean_negative": torch.tensor([-1.0, 4.0]),
        "std_negative": torch.tensor([0.0, 0.25]),
    }
    alpha, beta = transport_coefficients(stats, 1.0)
    torch.testing.assert_close(alpha, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(beta, torch.tensor([3.0, 1.0 - 2.0 * 4.0]))
    alpha, beta = transport_coefficients(stats, -0.5)
    torch.testing.assert_close(alpha, torch.tensor([1.0, 1.5 - 0.5 * 2.0]))
    torch.testing.assert_close(beta, torch.tensor([-1.5, -0.5 * (1.0 - 2.0 * 4.0)]))


def test_default_layers_are_the_last_tenth():
    assert default_transport_layers(4) == [3]
    assert default_transport_layers(28) == [25, 26, 27]
    assert default_transport_layers(32) == [29, 30, 31]
    assert default_transport_layers(16) == [14, 15]


def test_bad_settings_and_tampered_artifacts_are_one_line(tiny_qwen):
    model, tokenizer = tiny_qwen
    adapter = ModelAdapter.from_model(model)
    with pytest.raises(SteerbenchError, match="indices in"):
        get_method("mean-act", layers=[4]).check_model(adapter)
    with pytest.raises(SteerbenchError, match="only 128"):
        get_method("mean-act", layers=[1], top_k=129).check_model(adapter)
    with pytest.raises(SteerbenchError, match="min_std"):
        get_method("mean-act", min_std=0.0)
    method, artifact = fit(model, tokenizer)
    artifact.tensors["std_negative"] = -artifact.tensors["std_negative"]
    with pytest.raises(SteerbenchError, match="negative standard deviations"):
        method.steer(model, artifact, 1.0)
