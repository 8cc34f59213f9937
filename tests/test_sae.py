import pytest
import torch
from helpers import NEGATIVE, POSITIVE, logits

from steerbench.errors import SteerbenchError
from steerbench.integrations import sae_training as sae_lib
from steerbench.method import FitContext, get_method
from steerbench.methods.sae_features import rank_features
from steerbench.model.adapter import ModelAdapter

SETTINGS = sae_lib.SAETrainingSettings(width=48, steps=6, batch_size=64, max_tokens=4000)


@pytest.fixture(scope="module")
def trained_sae(tmp_path_factory):
    from steerbench.testing import tiny_model

    model, tokenizer = tiny_model("qwen2", seed=1)
    texts = sae_lib.training_texts(("neutral", "jbb-harmful"))
    acts = sae_lib.collect_residuals(
        model, tokenizer, texts, 2, progress=False, max_tokens=SETTINGS.max_tokens
    )
    sae, report = sae_lib.train_sae(
        acts, SETTINGS, hook_name="resid_post.2", model_name="tiny", progress=False
    )
    directory = tmp_path_factory.mktemp("sae")
    sae_lib.save_sae(sae, directory, report, SETTINGS, 2)
    return model, tokenizer, sae, directory, report, acts


def test_collect_residuals_takes_every_real_token(tiny_qwen):
    model, tokenizer = tiny_qwen
    acts = sae_lib.collect_residuals(
        model, tokenizer, ["Hi", "A much longer prompt here"], 1, progress=False
    )
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in ["Hi", "A much longer prompt here"]
    ]
    n_tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in rendered)
    assert acts.shape == (n_tokens, 64)


def test_trained_sae_round_trips_through_sae_lens(trained_sae):
    from sae_lens import SAE

    _, _, sae, directory, report, acts = trained_sae
    loaded = SAE.load_from_disk(directory)
    x = acts[:10].float()
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    assert set(report) >= {"mse", "explained_variance", "l0", "dead_fraction"}
    assert 0 <= report["dead_fraction"] <= 1 and report["l0"] > 0
    assert sae_lib.sae_layer(loaded, 0) == 2


def fitted(trained_sae, method="sae"):
    model, tokenizer, _, directory, *_ = trained_sae
    steerer = get_method(method, sae=str(directory), top_n=4)
    return model, tokenizer, steerer, steerer.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)


def test_strength_one_is_bit_identical(trained_sae):
    model, tokenizer, steerer, artifact = fitted(trained_sae)
    before = logits(model, tokenizer)
    with steerer.steer(model, artifact, 1.0):
        assert torch.equal(logits(model, tokenizer), before)


def test_strength_zero_removes_exactly_the_selected_features(trained_sae):
    model, tokenizer, steerer, artifact = fitted(trained_sae)
    sae = trained_sae[2]
    chosen = artifact.tensors["features"]
    layer = ModelAdapter.from_model(model).layers[2]

    def manual(_m, _a, out):
        hidden = out[0] if isinstance(out, tuple) else out
        contribution = sae.encode(hidden)[..., chosen] @ sae.W_dec[chosen]
        return (
            (hidden - contribution, *out[1:]) if isinstance(out, tuple) else hidden - contribution
        )

    handle = layer.register_forward_hook(manual)
    expected = logits(model, tokenizer)
    handle.remove()
    with steerer.steer(model, artifact, 0.0):
        torch.testing.assert_close(logits(model, tokenizer), expected, atol=1e-5, rtol=1e-5)
    assert artifact.metadata["summary"]["features"][0]["density"] >= 0


def test_add_mode_adds_the_decoder_directions(trained_sae):
    model, tokenizer, steerer, artifact = fitted(trained_sae, "sae-add")
    direction = artifact.tensors["W_dec"].sum(0)
    layer = ModelAdapter.from_model(model).layers[2]
    handle = layer.register_forward_hook(
        lambda _m, _a, out: (
            (out[0] + 3 * direction, *out[1:]) if isinstance(out, tuple) else out + 3 * direction
        )
    )
    expected = logits(model, tokenizer)
    handle.remove()
    with steerer.steer(model, artifact, 3.0):
        torch.testing.assert_close(logits(model, tokenizer), expected, atol=1e-5, rtol=1e-5)


def test_contrastive_ranking_picks_a_planted_feature():
    f_neg = torch.rand(20, 50)
    f_pos = torch.rand(20, 50)
    f_pos[:, 37] += 5.0
    f_pos[:, 3] += 2.0
    assert rank_features(f_pos, f_neg, 2).tolist() == [37, 3]


def test_sae_of_another_width_is_a_clear_error(trained_sae, tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig

    other = StandardSAE(StandardSAEConfig(d_in=32, d_sae=16))
    other.cfg.metadata.hook_name = "resid_post.1"
    other.save_model(tmp_path)
    model, tokenizer, *_ = trained_sae
    with pytest.raises(SteerbenchError, match="d_in 32 does not match the model's d_model 64"):
        get_method("sae", sae=str(tmp_path)).fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    with pytest.raises(SteerbenchError, match="not a sae-lens SAE directory"):
        get_method("sae", sae=str(tmp_path / "missing")).fit(
            FitContext(model, tokenizer), POSITIVE, NEGATIVE
        )


def test_summary_names_each_features_top_prompts(trained_sae):
    *_, artifact = fitted(trained_sae)
    for feature in artifact.metadata["summary"]["features"]:
        assert len(feature["top_prompts"]) == 3
        assert set(feature["top_prompts"]) <= set(POSITIVE + NEGATIVE)


def random_sae(directory, architecture: str, normalize: str = "none", d_sae: int = 48):
    """A sae-lens SAE with random weights, as a published one would load (saved to disk)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig

    classes = {
        "standard": (StandardSAE, StandardSAEConfig),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
    }
    sae_cls, cfg_cls = classes[architecture]
    sae = sae_cls(cfg_cls(d_in=64, d_sae=d_sae, normalize_activations=normalize))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=generator))
        if architecture == "jumprelu":
            sae.threshold.copy_(0.05 + 0.1 * torch.rand(d_sae, generator=generator))
    sae.cfg.metadata.hook_name = "resid_post.2"
    sae.save_model(directory)
    return sae


@pytest.mark.parametrize(
    "architecture, normalize",
    [("standard", "layer_norm"), ("standard", "constant_norm_rescale"), ("jumprelu", "none")],
)
@pytest.mark.parametrize("strength", [0.0, 2.5])
def test_steering_equals_editing_features_inside_sae_lens(
    tmp_path, architecture, normalize, strength
):
    """x' = x + dec(f with the chosen features x m) - dec(f), with the whole SAE and
    sae-lens's own encode/decode (normalisation and thresholds included)."""
    from steerbench.testing import tiny_model

    model, tokenizer = tiny_model("qwen2", seed=1)
    sae = random_sae(tmp_path, architecture, normalize)
    steerer = get_method("sae", sae=str(tmp_path), top_n=4)
    artifact = steerer.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    chosen = artifact.tensors["features"]
    scale = torch.ones(sae.cfg.d_sae)
    scale[chosen] = strength

    def edit_features(_m, _a, out):
        hidden = out[0] if isinstance(out, tuple) else out
        features = sae.encode(hidden)
        edited = sae.decode(features * scale)
        sae.encode(hidden)  # normalising SAEs keep per-input state for one decode
        change = torch.nan_to_num(edited - sae.decode(features), nan=0.0)  # zero padding rows
        steered = hidden + change
        return (steered, *out[1:]) if isinstance(out, tuple) else steered

    before = logits(model, tokenizer)
    handle = ModelAdapter.from_model(model).layers[2].register_forward_hook(edit_features)
    with torch.no_grad():
        expected = logits(model, tokenizer)
    handle.remove()
    assert not torch.allclose(expected, before, atol=1e-4)  # the features do fire
    with steerer.steer(model, artifact, strength):
        torch.testing.assert_close(logits(model, tokenizer), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(logits(model, tokenizer), before)


def test_sae_that_cannot_be_subset_is_refused(tmp_path, tiny_qwen):
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=64, d_sae=32, k=4))
    sae.cfg.metadata.hook_name = "resid_post.2"
    sae.save_model(tmp_path)
    model, tokenizer = tiny_qwen
    with pytest.raises(SteerbenchError, match="architecture 'topk' is not supported"):
        get_method("sae", sae=str(tmp_path)).fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)


def test_sae_train_reuses_cached_activations_only_from_the_same_source(tmp_path, caplog):
    """A rerun with another layer, model or token count recaptures (and says so); a rerun
    with the same ones reuses the cache untouched."""
    import logging

    from steerbench.cli.main import main
    from steerbench.model.loading import load_model
    from steerbench.testing import save_tiny_model

    first = save_tiny_model(tmp_path / "first", "qwen2", seed=0)
    other = save_tiny_model(tmp_path / "other", "qwen2", seed=1)
    out = tmp_path / "sae"
    cache = out / "activations.safetensors"
    small = ["--steps", "3", "--width", "8", "--batch-size", "32", "--device", "cpu"]

    def train(model, layer: int, max_tokens: int = 400) -> torch.Tensor:
        argv = ["sae", "train", "--out", str(out), "--model", str(model), "--layer", str(layer)]
        assert main([*argv, *small, "--dtype", "float32", "--max-tokens", str(max_tokens)]) == 0
        return sae_lib.load_cached_residuals(cache)

    def captured(model, layer: int, max_tokens: int = 400) -> torch.Tensor:
        loaded = load_model(str(model), device="cpu", dtype="float32")
        texts = sae_lib.training_texts()
        return sae_lib.collect_residuals(
            loaded.model, loaded.tokenizer, texts, layer, max_tokens=max_tokens, progress=False
        )

    assert torch.equal(train(first, 1), captured(first, 1))
    caplog.set_level(logging.INFO, logger="steerbench")
    assert torch.equal(train(first, 2), captured(first, 2))  # not layer 1's activations
    assert "layer" in caplog.text and "recaptur" in caplog.text.lower()
    assert torch.equal(train(other, 2), captured(other, 2))  # not the first model's
    assert torch.equal(train(other, 2, max_tokens=300), captured(other, 2, max_tokens=300))
    written = cache.stat().st_mtime_ns
    caplog.clear()
    assert torch.equal(train(other, 2, max_tokens=300), captured(other, 2, max_tokens=300))
    assert cache.stat().st_mtime_ns == written and "Reusing" in caplog.text


def test_cached_activations_without_their_source_or_from_another_are_not_reused(tmp_path):
    from safetensors.torch import save_file

    acts = torch.randn(5, 4).to(torch.bfloat16)
    source = {"model": "m", "layer": 1, "max_tokens": 5}
    save_file({"activations": acts}, tmp_path / sae_lib.ACTIVATIONS)  # as before the fix
    assert sae_lib.cached_residuals(tmp_path, source) is None
    sae_lib.cache_residuals(tmp_path, acts, source)
    assert torch.equal(sae_lib.cached_residuals(tmp_path, source), acts)
    assert sae_lib.cached_residuals(tmp_path, {**source, "layer": 2}) is None
    (tmp_path / sae_lib.SOURCE).write_text("{not json")
    assert sae_lib.cached_residuals(tmp_path, source) is None
