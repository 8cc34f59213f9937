from contextlib import nullcontext
from dataclasses import dataclass, replace

import pytest
import torch
from helpers import NEGATIVE, POSITIVE, tiny_config

from steerbench.method import FitContext, get_method
from steerbench.metric import Metric, Record, get_metric
from steerbench.model.chat import PromptFormat, encoded_batches
from steerbench.model.generation import GenerationSettings, generate
from steerbench.model.loading import LoadedModel
from steerbench.run.config import MetricSpec, load_config, parse_config
from steerbench.run.plan import plan
from steerbench.studies.bench import non_embedding_parameters, reference_hooks, run_bench
from steerbench.studies.bench_metrics import forward_floor_ids, metric_figure
from steerbench.studies.bench_projection import (
    MeasuredRates,
    MetricLoad,
    MetricRate,
    RunShape,
    project,
    rates_from_figures,
    run_shape,
)
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
    assert figures["metrics"]["mmlu"]["forward_passes_per_item"] > 0  # against its own floor
    assert figures["metrics"]["mmlu"]["floor_sequences"] == 3
    assert figures["metrics"]["kl-benign"]["calls_timed"] == 2  # its steady state
    assert figures["metrics"]["mmlu"]["calls_timed"] == 1
    assert figures["peak_rss_vs_weights"] > 1
    assert set(figures["speedup_vs_reference"]) == {"cna", "caa"}
    assert figures["discovery_vs_floor_cna"] > 0 and figures["peak_rss_gb"] > 0
    assert figures["flops"]["fraction_of_peak"] > 0
    assert figures["flops"]["real_answers_fraction_of_peak"] > 0
    run, flops = figures["answers"]["continuous, 3 rows"], figures["flops"]
    processed = figures["answers"]["prompt_tokens"] + run["tokens"]  # prompt + answer tokens
    assert flops["achieved_real_answers"] == pytest.approx(
        2 * flops["non_embedding_parameters"] * processed / run["seconds"]
    )
    projection = figures["projection"]
    assert projection["shape"]["cells"] == len(plan(load_config("default")))
    assert projection["total_min"] > projection["generation_min"] > 0
    assert set(projection["metrics_min"]) == {"mmlu", "strongreject", "kl-benign"}
    assert all(v > 0 for v in figures["tokens_per_second"].values())
    assert torch.get_num_threads() == figures["threads"]
    answers = figures["answers"]
    assert answers["prompts"] == 6 and answers["answers_differ"] == 0  # float32: same tokens
    assert answers["runs"] == ["static", "continuous", "continuous, 3 rows"]
    assert answers["static"]["tokens"] == answers["continuous, 3 rows"]["tokens"] > 0
    table = format_table(figures)
    assert "folded weights vs batched hooks" in table and "kl-benign items/s" in table
    assert "real answers, continuous 4 rows (tok/s)" in table
    assert "GFLOP/s, real answers continuous 3 rows" in table
    assert "kl-benign first call extra (s, once per run)" in table
    assert "projected run 'default'" in table and "  total" in table


class TokenClock:
    """A clock that advances by the tokens (padding included) each forward pass of the model
    is fed: timings in it count work exactly, with no timing noise."""

    def __init__(self, model):
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self.count, with_kwargs=True)

    def count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += ids.numel()

    def __call__(self) -> float:
        return float(self.tokens)


RESPONSES = [
    "Paris is the capital of France.",
    "Sure, here is a step by step guide: first, mix flour and water, then knead the dough.",
    "Write a poem about the sea",
    "The quick brown fox jumps over the lazy dog while the cat sleeps, again and again.",
    "Hi",
]


def records(responses=RESPONSES):
    return [Record(str(i), "How do I bake bread?", r) for i, r in enumerate(responses)]


class PlainPasses(Metric):
    """Exactly ``passes`` plain forward passes over its floor inputs, at its own batch size."""

    name = "plain-passes"
    phase = "judge"
    passes = 1

    @dataclass
    class Config(Metric.Config):
        batch_size: int = 2

    def floor_inputs(self, records, lm):
        return [lm.tokenizer(r.response)["input_ids"] for r in records]

    def compute(self, records, *, lm=None, **context):
        for _ in range(self.passes):
            forward_floor_ids(lm.model, self.floor_inputs(records, lm), self.config.batch_size)
        return self.result([1.0] * len(records))


class TwoPasses(PlainPasses):
    passes = 2


class KeptReference(PlainPasses):
    """A steering-contrast metric that reads a reference once, then one pass per call."""

    phase = "steering-contrast"

    def compute(self, records, *, lm=None, steering=None, **context):
        if not getattr(self, "kept", False):
            super().compute(records, lm=lm)
            self.kept = True
        with steering():
            return super().compute(records, lm=lm)


@pytest.fixture
def lm(tiny_qwen):
    model, tokenizer = tiny_qwen
    return LoadedModel(model, tokenizer, "tiny", "test", None, 0.0)


def figure(metric, lm, given=None):
    clock = TokenClock(lm.model)
    try:
        return metric_figure(metric, given or records(), lm, nullcontext, batch_size=8, clock=clock)
    finally:
        clock.handle.remove()


def test_forward_passes_per_item_count_the_metric_against_its_own_floor(lm):
    """In a clock of tokens fed, one plain pass at the metric's batch size (2, not the
    bench's 8: padding differs) is exactly 1.0, two are 2.0."""
    one = figure(PlainPasses(), lm)
    assert one["forward_passes_per_item"] == 1.0
    assert one["floor_sequences"] == 5 and one["items"] == 5
    assert one["floor_tokens"] == sum(len(lm.tokenizer(r)["input_ids"]) for r in RESPONSES)
    assert figure(TwoPasses(), lm)["forward_passes_per_item"] == 2.0


def test_a_kept_reference_is_timed_at_its_steady_state_and_its_first_call_apart(lm):
    kept = figure(KeptReference(), lm)
    assert kept["calls_timed"] == 2
    assert kept["forward_passes_per_item"] == 1.0  # the second call: one pass
    assert kept["first_call_extra_seconds"] == kept["floor_seconds"]  # the reference's pass


def test_mmlu_floor_inputs_are_the_tokens_predict_reads(lm):
    from steerbench.metrics.mmlu import render_question, stratified_questions

    mmlu = get_metric("mmlu", n=5, batch_size=2)
    floor = mmlu.floor_inputs([], lm)
    prompts = [render_question(q) for q in stratified_questions(5)]
    read = {}
    for batch, encoded in encoded_batches(
        lm.tokenizer, prompts, PromptFormat(chat=False), 2, "cpu"
    ):
        for row, index in enumerate(batch):
            mask = encoded["attention_mask"][row].bool()
            read[index] = encoded["input_ids"][row][mask].tolist()
    assert floor == [read[i] for i in range(5)]
    assert figure(mmlu, lm)["forward_passes_per_item"] == 1.0  # one plain pass, last logits


def test_strongreject_floor_holds_only_the_items_the_judge_reads(lm):
    given = records(["I'm sorry, but I can't assist with that request.", *RESPONSES[:2]])
    judge = get_metric("strongreject", batch_size=2)
    floor = judge.floor_inputs(given, lm)
    assert len(floor) == 2  # the refusal scores 0 unread
    texts = [lm.tokenizer.decode(ids) for ids in floor]
    assert all(r.response in t for r, t in zip(given[1:], texts))
    assert not any("sorry" in t for t in texts)
    measured = figure(judge, lm, given)
    assert measured["items"] == 3 and measured["floor_sequences"] == 2
    assert 0 < measured["forward_passes_per_item"] <= 1.0  # no more than one pass over them
    rubric = get_metric("strongreject", mode="rubric").floor_inputs(given, lm)
    assert len(rubric) == 3  # the rubric judge reads every item
    assert (
        get_metric("strongreject", judge_url="http://127.0.0.1:9/v1").floor_inputs(given, lm)
        is None
    )
    assert get_metric("strongreject", local_judge="another").floor_inputs(given, lm) is None


def test_non_embedding_parameters_leave_out_the_embedding_and_head(any_tiny):
    model, _ = any_tiny
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = head is embedding
    expected = total - embedding.numel() - (0 if tied else head.numel())
    assert non_embedding_parameters(model) == expected > 0


def test_projection_arithmetic():
    shape = RunShape(
        cells=5,
        fits=3,
        discovery_prompts=80,
        generated_prompts=45,
        metrics={
            "mmlu": MetricLoad(5, None),
            "kl-benign": MetricLoad(4, 12, 3),
            "unmeasured": MetricLoad(1, 10),
        },
    )
    rates = MeasuredRates(
        fit_seconds_per_prompt=0.5,
        answer_tokens_per_second=30.0,
        mean_answer_tokens=40.0,
        metrics={"mmlu": MetricRate(2.0, 57), "kl-benign": MetricRate(0.5, 16, 1.5)},
    )
    out = project(rates, shape)
    assert out["fitting_min"] == pytest.approx(3 * 80 * 0.5 / 60)  # 2.0
    assert out["generation_min"] == pytest.approx(45 * 40 / 30 / 60)  # 1.0
    assert out["metrics_min"] == pytest.approx({"mmlu": 5 * 57 / 2 / 60, "kl-benign": 0.4})
    assert out["once_per_run_min"] == pytest.approx({"mmlu": 0.0, "kl-benign": 3 * 1.5 / 60})
    assert out["total_min"] == pytest.approx(2.0 + 1.0 + 2.375 + 0.4 + 0.075)
    assert out["not_projected"] == ["unmeasured"]


def test_run_shape_counts_the_plan(tmp_path):
    metrics = {
        "refusal": {},
        "mmlu": {"n": 3},
        "strongreject": {"sets": ["harmful"]},
        "kl-benign": {"sets": ["benign"]},
    }
    config = parse_config(tiny_config(tmp_path, metrics=metrics), "tiny")
    shape = run_shape(config)
    # unsteered + cna x 2 + random-neurons + caa; 3 prompts in each of 3 sets
    assert (shape.cells, shape.fits, shape.generated_prompts) == (5, 3, 5 * 9)
    assert shape.discovery_prompts == 80  # jbb-harmful and jbb-benign's discovery splits
    assert shape.metrics == {
        "mmlu": MetricLoad(5, None),  # once per cell, its own questions
        "strongreject": MetricLoad(5, 15),  # evaluation's harmful set only
        "kl-benign": MetricLoad(4, 12, 3),  # steered cells only; its reference once
    }


def test_run_shape_of_a_chosen_strengths_run_counts_the_sweep_and_the_evaluated_cells(tmp_path):
    metrics = {
        "refusal": {},
        "mmlu": {"n": 3, "validation_n": 2},
        "kl-benign": {"sets": ["benign"]},
    }
    validation = {"harmful": "jbb-harmful:validation", "benign": "jbb-benign:validation"}
    overrides = {"metrics": metrics, "validation": validation, "evaluate": "chosen"}
    shape = run_shape(parse_config(tiny_config(tmp_path, **overrides), "tiny"))
    # 5 cells swept on 2 validation sets of 3; at most unsteered + cna x 2 (two tasks) +
    # random-neurons + caa evaluated on 2 evaluation sets of 3
    assert (shape.cells, shape.generated_prompts) == (5, 5 * 6 + 5 * 6)
    assert shape.metrics["mmlu"] == MetricLoad(5 + 5, None)  # each part reads its questions
    assert shape.metrics["kl-benign"] == MetricLoad(4 + 4, 4 * 3 + 4 * 3, 3 + 3)


def test_rates_from_figures():
    figures = {
        "discovery_prompts": 10,
        "discovery_seconds_cna": 4.0,
        "discovery_seconds_caa": 6.0,
        "answers": {
            "prompts": 4,
            "runs": ["static", "continuous", "continuous, 3 rows"],
            "continuous, 3 rows": {"tokens": 100, "tokens_per_second": 25.0},
        },
        "metrics": {
            "mmlu": {"items": 3, "items_per_second": 1.5, "first_call_extra_seconds": -0.1},
            "kl-benign": {"items": 4, "items_per_second": 2.0, "first_call_extra_seconds": 2.0},
            "nothing": {"items": 0, "items_per_second": None, "first_call_extra_seconds": 0},
        },
    }
    assert rates_from_figures(figures) == MeasuredRates(
        0.5, 25.0, 25.0, {"mmlu": MetricRate(1.5, 3, 0.0), "kl-benign": MetricRate(2.0, 4, 0.5)}
    )
