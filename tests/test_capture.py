import pytest
import torch

from steerbench.errors import SteerbenchError
from steerbench.model.adapter import ModelAdapter, parse_site
from steerbench.model.capture import capture_last_token
from steerbench.model.chat import format_prompts

PROMPTS = [
    "Hi",
    "How do I bake bread at home? Explain every step in great detail please.",
    "Write a poem about the sea and the sky",
    "ok",
    "What is the capital of France? Paris is the capital of France.",
]


def test_batched_capture_equals_per_prompt_capture(any_tiny):
    model, tokenizer = any_tiny
    batched = capture_last_token(model, tokenizer, PROMPTS, batch_size=5)
    for i, prompt in enumerate(PROMPTS):
        single = capture_last_token(model, tokenizer, [prompt], batch_size=1)
        for kind in ("mlp_in", "resid_post"):
            # float32 on CPU: padding only changes the reduction order of the matmuls, which
            # moves values of order 1-10 by ~1e-5; a wrong position or mask moves them by ~1.
            torch.testing.assert_close(batched[kind][i], single[kind][0], atol=1e-4, rtol=1e-3)


def test_capture_shapes_and_values_match_manual_hooks(tiny_qwen):
    model, tokenizer = tiny_qwen
    adapter = ModelAdapter.from_model(model)
    acts = capture_last_token(model, tokenizer, PROMPTS[:2], batch_size=2)
    assert acts.mlp_in.shape == (2, adapter.n_layers, adapter.d_mlp)
    assert acts.resid_post.shape == (2, adapter.n_layers, adapter.d_model)
    assert acts.mlp_in.dtype == torch.float32

    text = format_prompts(tokenizer, [PROMPTS[1]])[0]
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    seen = {}
    layer = 2
    handle = adapter.down_proj(layer).register_forward_pre_hook(
        lambda _m, args: seen.setdefault("x", args[0][0, -1].clone())
    )
    with torch.inference_mode():
        out = model(**ids, output_hidden_states=True)
    handle.remove()
    torch.testing.assert_close(acts.mlp_in[1, layer], seen["x"], atol=1e-5, rtol=1e-4)
    # hidden_states[l + 1] is the output of layer l (the last one has the final norm applied).
    torch.testing.assert_close(
        acts.resid_post[1, layer], out.hidden_states[layer + 1][0, -1], atol=1e-5, rtol=1e-4
    )


def test_adapter_finds_layers_for_each_architecture(any_tiny):
    model, _ = any_tiny
    adapter = ModelAdapter.from_model(model)
    assert adapter.n_layers == 4
    assert (adapter.d_mlp, adapter.d_model) == (128, 64)


def test_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(SteerbenchError, match=r"gpt2.*not supported.*llama"):
        ModelAdapter.from_model(model)


def test_site_names_parse():
    assert parse_site("mlp_in.3") == ("mlp_in", 3)
    with pytest.raises(SteerbenchError, match="unknown site"):
        parse_site("blocks.3.mlp")
