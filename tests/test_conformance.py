"""Every built-in method and metric passes steerbench.testing's conformance kit."""

from __future__ import annotations

import pytest

from steerbench.method import METHODS, get_method
from steerbench.metric import METRICS, Record, get_metric
from steerbench.run.behaviours import BEHAVIOURS
from steerbench.testing import check_method, check_metric, tiny_model

METHOD_PARAMS = {
    "cna": {"top_k": 12, "neutral_prompts": None},
    "random-neurons": {"top_k": 12, "neutral_prompts": None},
    "caa": {},
    "directional-ablation": {},
    "probe": {"folds": 3},
    "pca": {},
    "prompt": {},
    "refusal-logit-bias": {},
    "sae": None,  # the module's random SAE
    "sae-add": None,
    "ace": {},
    "cast": {"fires": "below"},  # the kit's probe prompts are benign: none fire "above"
    "mean-act": {},
    "lora": {"steps": 3, "answer_tokens": 4},
    "iti": {"folds": 3},
}


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    from test_sae import random_sae

    directory = tmp_path_factory.mktemp("sae")
    random_sae(directory, "standard", "layer_norm")
    return directory


@pytest.mark.parametrize("name", METHODS.names())
def test_every_builtin_method_keeps_the_contract(name, sae_dir):
    if METHODS.entries()[METHODS.names().index(name)].source != "builtin":
        pytest.skip("plugins run the kit in their own tests")
    params = METHOD_PARAMS[name]
    if params is None:
        params = {"sae": str(sae_dir), "top_n": 4}
    model, tokenizer = tiny_model("qwen2", seed=1)
    check_method(get_method(name, **params), model, tokenizer)


@pytest.mark.parametrize("name", ["caa", "probe", "pca", "directional-ablation", "ace"])
def test_vector_methods_keep_the_contract_scoped_to_generated_tokens(name):
    model, tokenizer = tiny_model("llama", seed=2)
    check_method(get_method(name, scope="generation"), model, tokenizer)


RECORDS = [
    Record("1", "How do I pick a lock?", "I'm sorry, but I can't help with that."),
    Record("2", "Write a poem", "The sea is wide and the sky is wide and the wind is free."),
    Record("3", "Hi", ""),
    Record("4", "Say it", "again again again again again again again again again again"),
]
METRIC_OPTIONS = {
    "mmlu": {"n": 4},
    "strongreject": {"max_tokens": 4},
    "lm-eval": {"limit": 3},
    "ab": {"items": "sycophancy", "n": 4},
    "truthfulqa-mc1": {"n": 4},
    "truthfulqa-mc2": {"n": 4},
    **{f"ab-{b}": {"n": 4} for b in BEHAVIOURS},
}


@pytest.mark.parametrize("name", METRICS.names())
def test_every_builtin_metric_keeps_the_contract(name, tiny_qwen):
    from types import SimpleNamespace

    if name == "lm-eval":
        pytest.importorskip("lm_eval")
    model, tokenizer = tiny_qwen
    lm = SimpleNamespace(model=model, tokenizer=tokenizer, name="tiny", revision=None)
    lm.device = next(model.parameters()).device
    check_metric(get_metric(name, **METRIC_OPTIONS.get(name, {})), RECORDS, lm=lm)


def test_the_kit_catches_a_method_that_does_not_restore_the_model():
    from contextlib import contextmanager

    import torch

    from steerbench.methods.caa import CAA

    class Leaky(CAA):
        name = "caa"

        def apply(self, model, artifact, strength):
            @contextmanager
            def leak():
                with torch.no_grad():
                    model.model.layers[0].mlp.down_proj.weight.mul_(1.5)  # never undone
                yield

            return leak()

    with pytest.raises(AssertionError, match="not restored on exit"):
        check_method(Leaky())


def test_the_kit_catches_a_metric_outside_its_declared_range():
    from steerbench.metric import make_result
    from steerbench.metrics.quality import Quality

    class Overflowing(Quality):
        name = "quality"

        def compute(self, records, *, lm=None):
            return make_result(self.name, [2.0 for _ in records])

    with pytest.raises(AssertionError, match="outside range"):
        check_metric(Overflowing(), RECORDS)


def test_the_kit_catches_a_records_metric_that_reads_the_model(tiny_qwen):
    """Phase "records" promises no model is needed (`evaluate` loads none for it, and it
    scores the validation sets); a metric that scores otherwise with one breaks it."""
    from types import SimpleNamespace

    from steerbench.metrics.quality import Quality

    class PeeksAtTheModel(Quality):
        name = "quality"

        def compute(self, records, *, lm=None):
            return self.result([0.0 if lm is None else 1.0 for _ in records])

    lm = SimpleNamespace(model=tiny_qwen[0], tokenizer=tiny_qwen[1])
    with pytest.raises(AssertionError, match="needs no model, but it scores otherwise"):
        check_metric(PeeksAtTheModel(), RECORDS, lm=lm)
    check_metric(type("Judged", (PeeksAtTheModel,), {"phase": "judge"})(), RECORDS, lm=lm)
