"""A metric declares one ``phase``; the rule of each phase (which splits, which arguments,
whether under steering) is one table next to ``Metric``, and the runner only applies it.
Metrics written for 0.1 with the three switches keep the behaviour they had."""

from __future__ import annotations

import itertools
import warnings
from typing import get_args

import pytest

from steerbench.metric import (
    METRICS,
    MODEL_LEVEL,
    PHASE_RULES,
    SPLIT_EVALUATION,
    SPLIT_VALIDATION,
    Metric,
    Phase,
    PhaseRule,
    Record,
    get_metric,
    metric_calls,
)

RECORDS = {
    (SPLIT_EVALUATION, "harmful"): [Record("1", "p", "r")],
    (SPLIT_EVALUATION, "benign"): [Record("2", "p", "r")],
    (SPLIT_VALIDATION, "harmful"): [Record("3", "p", "r")],
}
LM = object()


def steering():  # what the runner passes for a steered cell
    raise AssertionError("metric_calls must not open the steering itself")


def make_metric(**attributes) -> Metric:
    """An instance of a new metric class with these class attributes."""

    def compute(self, records, *, lm=None, **context):
        return self.result([0.0 for _ in records])

    return type("Probe", (Metric,), {**attributes, "compute": compute})()


def calls(metric: Metric, *, under_steering: bool, steering=steering, sets=None):
    made = metric_calls(
        metric, RECORDS, under_steering=under_steering, lm=LM, steering=steering, sets=sets
    )
    return [(c.split, c.eval_set, len(c.records), sorted(c.context)) for c in made]


def test_the_phase_table_is_pinned():
    assert tuple(PHASE_RULES) == get_args(Phase)
    assert {
        "records": PhaseRule(
            (SPLIT_EVALUATION, SPLIT_VALIDATION),
            model_level=False,
            under_steering=False,
            gets_steering=False,
            needs_model=False,
        ),
        "judge": PhaseRule(
            (SPLIT_EVALUATION,),
            model_level=False,
            under_steering=False,
            gets_steering=False,
            needs_model=True,
        ),
        "steered-model": PhaseRule(
            (SPLIT_EVALUATION, SPLIT_VALIDATION),
            model_level=True,
            under_steering=True,
            gets_steering=False,
            needs_model=True,
        ),
        "steering-contrast": PhaseRule(
            (SPLIT_EVALUATION, SPLIT_VALIDATION),
            model_level=False,
            under_steering=False,
            gets_steering=True,
            needs_model=True,
        ),
    } == PHASE_RULES


EVALUATION_CALLS = [
    (SPLIT_EVALUATION, "harmful", 1, ["lm"]),
    (SPLIT_EVALUATION, "benign", 1, ["lm"]),
]


@pytest.mark.parametrize(
    ("phase", "inside", "after"),
    [
        ("records", [], [*EVALUATION_CALLS, (SPLIT_VALIDATION, "harmful", 1, ["lm"])]),
        ("judge", [], EVALUATION_CALLS),
        ("steered-model", [(SPLIT_EVALUATION, MODEL_LEVEL, 0, ["lm"])], []),
        (
            "steering-contrast",
            [],
            [
                (SPLIT_EVALUATION, "harmful", 1, ["lm", "steering"]),
                (SPLIT_EVALUATION, "benign", 1, ["lm", "steering"]),
            ],
        ),
    ],
)
def test_every_phase_is_called_where_and_with_what_its_rule_says(phase, inside, after):
    metric = make_metric(phase=phase)
    assert calls(metric, under_steering=True) == inside
    assert calls(metric, under_steering=False) == after
    for call in metric_calls(metric, RECORDS, under_steering=False, lm=LM, steering=steering):
        assert call.context["lm"] is LM
        assert call.records is RECORDS[(call.split, call.eval_set)]
        assert call.context.get("steering", steering) is steering


def test_a_part_limits_the_splits_and_model_level_metrics_validate_only_on_their_own_items():
    record_level = make_metric()
    made = metric_calls(record_level, RECORDS, under_steering=False, lm=LM, steering=None,
                        splits=[SPLIT_VALIDATION])  # fmt: skip
    assert [(c.split, c.eval_set) for c in made] == [(SPLIT_VALIDATION, "harmful")]
    model_level = make_metric(phase="steered-model")
    assert not model_level.scores_split(SPLIT_VALIDATION)  # its reported items must not choose
    assert metric_calls(model_level, RECORDS, under_steering=True, lm=LM, steering=None,
                        splits=[SPLIT_VALIDATION]) == []  # fmt: skip
    model_level.scores_split = lambda split: True  # validation items of its own (MMLU's)
    made = metric_calls(model_level, RECORDS, under_steering=True, lm=LM, steering=None)
    assert [(c.split, c.eval_set) for c in made] == [
        (SPLIT_EVALUATION, MODEL_LEVEL),
        (SPLIT_VALIDATION, MODEL_LEVEL),
    ]


def test_the_unsteered_cell_gives_no_steering_and_sets_limit_record_metrics():
    contrast = make_metric(phase="steering-contrast")
    made = metric_calls(contrast, RECORDS, under_steering=False, lm=LM, steering=None)
    assert [c.context["steering"] for c in made] == [None, None]  # nothing to compare
    assert calls(make_metric(), under_steering=False, sets=["benign"]) == [
        (SPLIT_EVALUATION, "benign", 1, ["lm"])
    ]
    model_level = make_metric(phase="steered-model")  # sets name record sets: not its own
    assert calls(model_level, under_steering=True, sets=["benign"]) == [
        (SPLIT_EVALUATION, MODEL_LEVEL, 0, ["lm"])
    ]


def test_builtin_metrics_declare_their_phase_and_keep_the_switches_readable():
    phases = {e.name: e.cls.phase for e in METRICS.entries() if e.source == "builtin"}
    likelihood = [n for n in phases if n.startswith(("ab", "truthfulqa"))]
    assert len(likelihood) == 10 and {phases.pop(n) for n in likelihood} == {"steered-model"}
    assert phases == {
        "kl-benign": "steering-contrast",
        "lm-eval": "steered-model",
        "mmlu": "steered-model",
        "quality": "records",
        "refusal": "records",
        "strongreject": "judge",
    }
    mmlu, kl = METRICS.get("mmlu"), METRICS.get("kl-benign")
    assert mmlu.needs_model and mmlu.measures_steered_model and not mmlu.uses_steering
    assert kl.needs_model and kl.uses_steering and not kl.measures_steered_model
    assert mmlu.declared_columns() == {} and METRICS.get("quality").declared_columns()


def test_a_judge_that_calls_a_server_needs_no_model():
    assert get_metric("strongreject").uses_model()
    assert not get_metric("strongreject", judge_url="http://localhost:1/v1").uses_model()
    assert not get_metric("refusal").uses_model() and get_metric("mmlu").uses_model()


def old_runner_calls(needs_model: bool, measures_steered_model: bool, uses_steering: bool):
    """What the 0.1 runner did with a metric of these switches: (inside, after) steering."""
    if measures_steered_model:
        return [(SPLIT_EVALUATION, MODEL_LEVEL, 0, ["lm"])], []
    after = []
    for split, name in RECORDS:
        if split == SPLIT_VALIDATION and (needs_model or uses_steering):
            continue
        extra = ["steering"] if uses_steering else []
        after.append((split, name, 1, ["lm", *extra]))
    return [], after


@pytest.mark.parametrize("switches", list(itertools.product([False, True], repeat=3)))
def test_a_01_metric_that_sets_the_switches_is_called_as_before(switches):
    _, measures_steered_model, uses_steering = switches
    names = ("needs_model", "measures_steered_model", "uses_steering")
    set_ = {name: True for name, value in zip(names, switches) if value}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric = make_metric(**set_)
    assert bool(set_) == any(
        issubclass(w.category, DeprecationWarning) and "declare phase" in str(w.message)
        for w in caught
    )
    inside, after = old_runner_calls(*switches)
    assert calls(metric, under_steering=True) == inside
    assert calls(metric, under_steering=False) == after
    assert metric.measures_steered_model == measures_steered_model  # read back, derived
    if not measures_steered_model:
        assert metric.uses_steering == uses_steering


def test_a_subclass_keeps_its_parents_phase_and_a_typo_is_refused_at_once():
    judge = type(make_metric(phase="judge"))
    child = type("Child", (judge,), {})
    assert child.phase == "judge" and child.needs_model
    with pytest.raises(TypeError, match="phase 'judges'; one of records, judge"):
        make_metric(phase="judges")


def test_the_metrics_listing_shows_each_phase(capsys):
    from steerbench.cli.commands.metrics import cmd_metrics

    cmd_metrics(None)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "source", "phase", "labels"]
    kl = next(line for line in lines if line.startswith("kl-benign "))
    assert kl.split()[:4] == ["kl-benign", "builtin", "steering-contrast", "no"]
    assert next(line for line in lines if line.startswith("mmlu ")).split()[2] == "steered-model"
