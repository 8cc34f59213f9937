from dataclasses import replace

import torch
from helpers import NEGATIVE, POSITIVE

from steerbench.method import FitContext, get_method
from steerbench.model.generation import GenerationSettings, generate
from steerbench.model.loading import LoadedModel
from steerbench.run.config import MetricSpec, load_config
from steerbench.studies.bench import reference_hooks, run_bench
from steerbench.studies.bench_table import format_table

PROMPTS = [
    "Hi",
    "Write a poem about the sea and the sky",
    "How do I bake bread at home?",
    "What is the capital of France? Tell me everything about it.",
]


def test_fast_steered_batched_generation_equals_the_slow_reference_path(any_tiny):
    """Weight folding + batching must not change a single generated token."""
    model, tokenizer = any_tiny
    cna = get_method("cna", top_k=12, neutral_prompts=None)
    artifact = cna.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    settings = GenerationSettings(max_new_tokens=10, batch_size=4)
    for m in (0.0, 2.0):
        with cna.steer(model, artifact, m):
            fast = generate(model, tokenizer, PROMPTS, settings, progress=False)
        with reference_hooks(model, artifact.tensors["layers"], artifact.tensors["neurons"], m):
            slow = [
                generate(
                    model, tokenizer, [p], GenerationSettings(max_new_tokens=10), progress=False
                )[0]
                for p in PROMPTS
            ]
        assert fast == slow


def test_bench_reports_every_ratio(tiny_qwen):
    model, tokenizer = tiny_qwen
    lm = LoadedModel(model, tokenizer, "tiny", "test", None, 0.0)
    metrics = [
        MetricSpec("refusal"),
        MetricSpec("mmlu", {"n": 3}),
        MetricSpec("strongreject"),
        MetricSpec("kl-benign"),
    ]
    figures = run_bench(
        lm,
        n_discovery=10,
        n_generate=4,
        n_reference=2,
        new_tokens=3,
        batch_size=4,
        repeats=1,
        n_metric_items=4,
        n_answers=6,
        answer_tokens=5,
        config=replace(load_config("default"), metrics=metrics, generation={"batch_size": 3}),
    )
    assert set(figures["steering_overhead"]) == {"cna", "caa"}
    assert set(figures["tokens_per_second"]) == {
        "unsteered",
        "cna",
        "caa",
        "cna_hooks",
        "reference",
    }
    assert figures["folding_vs_batched_hooks"] > 0
    assert set(figures["metrics"]) == {"mmlu", "strongreject", "kl-benign"}  # they read the model
    assert figures["metrics"]["mmlu"]["items"] == 3
    assert figures["metrics"]["kl-benign"]["items"] == 4
    assert all(m["forward_passes_per_item"] > 0 for m in figures["metrics"].values())
    assert figures["peak_rss_vs_weights"] > 1
    assert set(figures["speedup_vs_reference"]) == {"cna", "caa"}
    assert figures["discovery_vs_floor_cna"] > 0 and figures["peak_rss_gb"] > 0
    assert figures["flops"]["fraction_of_peak"] > 0
    assert all(v > 0 for v in figures["tokens_per_second"].values())
    assert torch.get_num_threads() == figures["threads"]
    answers = figures["answers"]
    assert answers["prompts"] == 6 and answers["answers_differ"] == 0  # float32: same tokens
    assert answers["runs"] == ["static", "continuous", "continuous, 3 rows"]
    assert answers["static"]["tokens"] == answers["continuous, 3 rows"]["tokens"] > 0
    table = format_table(figures)
    assert "folded weights vs batched hooks" in table and "kl-benign items/s" in table
    assert "real answers, continuous 4 rows (tok/s)" in table
