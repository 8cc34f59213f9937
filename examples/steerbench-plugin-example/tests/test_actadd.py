import torch

from steerbench.method import FitContext, get_method
from steerbench.testing import check_method, tiny_model


def test_registered_through_the_entry_point():
    assert type(get_method("actadd")).__name__ == "ActAdd"


def test_zero_strength_is_identical_and_steering_changes_logits():
    model, tokenizer = tiny_model("qwen2")
    method = get_method("actadd", layer=1)
    artifact = method.fit(FitContext(model, tokenizer), ["I hate you"], ["I love you"])
    ids = tokenizer("Hello there", return_tensors="pt")
    with torch.inference_mode():
        before = model(**ids).logits
        with method.steer(model, artifact, 0.0):
            assert torch.equal(model(**ids).logits, before)
        with method.steer(model, artifact, 4.0):
            assert not torch.allclose(model(**ids).logits, before)
        assert torch.equal(model(**ids).logits, before)


def test_keeps_steerbenchs_method_contract():
    """steerbench's conformance kit: neutral is identity, weights restored on exit and on
    exceptions, artifacts round-trip, bad strengths refused."""
    check_method(get_method("actadd", layer=1), strength=4.0)


def test_generation_scope_keeps_the_contract_and_leaves_the_prompt_alone():
    model, tokenizer = tiny_model("qwen2")
    method = get_method("actadd", layer=1, scope="generation")
    check_method(method, strength=4.0)
    artifact = method.fit(FitContext(model, tokenizer), ["I hate you"], ["I love you"])
    ids = tokenizer("Hello there", return_tensors="pt")
    with torch.inference_mode():
        before = model(**ids).logits
        with method.steer(model, artifact, 4.0):  # a prompt pass: unsteered
            assert torch.equal(model(**ids).logits, before)
