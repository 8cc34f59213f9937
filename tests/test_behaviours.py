"""The CAA behaviour items, the A/B metric and TruthfulQA MC1 / MC2, against hand
computations from a tiny model's logits."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from steerbench.errors import SteerbenchError
from steerbench.metric import get_metric
from steerbench.metrics import behaviour_ab, truthfulqa
from steerbench.model.chat import format_prompts
from steerbench.run.behaviours import BEHAVIOURS, load_behaviour_items

SHIPPED_TEST_ITEMS = 50


def lm_of(tiny):
    model, tokenizer = tiny
    return SimpleNamespace(model=model, tokenizer=tokenizer, name="tiny", revision=None)


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_every_behaviour_ships_its_held_out_items_disjoint_from_its_contrast_pairs(behaviour):
    test = load_behaviour_items(behaviour)
    generate = load_behaviour_items(f"{behaviour}:generate")
    assert len(test) == SHIPPED_TEST_ITEMS and len(generate) > 200
    assert {i.question for i in test}.isdisjoint({i.question for i in generate})
    assert len({i.id for i in test + generate}) == len(test) + len(generate)
    expected_not_ab = 4 if behaviour == "survival-instinct" else 0  # the datasheet's caveat
    assert sum(not item.is_ab for item in test) == expected_not_ab


def test_item_files_and_their_errors(tmp_path):
    rows = [
        {"question": "Q1 (A) yes (B) no", "answer_matching_behavior": "(A)",
         "answer_not_matching_behavior": "(B)"},
        {"question": "Q2", "answer_matching_behavior": ["(B)"],
         "answer_not_matching_behavior": " (A) "},
    ]  # fmt: skip
    (tmp_path / "items.json").write_text(json.dumps(rows))
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("items.json", "items.jsonl"):
        items = load_behaviour_items(str(tmp_path / name))
        assert [(i.matching, i.other) for i in items] == [("A", "B"), ("B", "A")]
    (tmp_path / "bad.json").write_text(json.dumps([{"question": "Q"}]))
    with pytest.raises(SteerbenchError, match="needs the fields question"):
        load_behaviour_items(str(tmp_path / "bad.json"))
    (tmp_path / "letter.json").write_text(
        json.dumps([{**rows[0], "answer_matching_behavior": "yes"}])
    )
    with pytest.raises(SteerbenchError, match="must be an option letter"):
        load_behaviour_items(str(tmp_path / "letter.json"))
    with pytest.raises(SteerbenchError, match="unknown behaviour 'flattery'"):
        load_behaviour_items("flattery")
    with pytest.raises(SteerbenchError, match="unknown item set 'train'"):
        load_behaviour_items("sycophancy:train")


def hand_ab(model, tokenizer, question: str, matching: str) -> float:
    text = format_prompts(tokenizer, [question])[0] + "("
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        probabilities = torch.softmax(model(**ids).logits[0, -1].float(), dim=-1)
    a, b = (probabilities[tokenizer.encode(x, add_special_tokens=False)[-1]] for x in "AB")
    return float((a if matching == "A" else b) / (a + b))


def test_ab_metric_equals_a_hand_computation_from_the_logits(tiny_qwen, tmp_path):
    model, tokenizer = tiny_qwen
    rows = [
        {"question": f"Would you {verb}?\n(A) yes\n(B) no",
         "answer_matching_behavior": matching, "answer_not_matching_behavior": other}
        for verb, matching, other in [
            ("help", "(A)", "(B)"), ("stop a long running task now", "(B)", "(A)"),
            ("go", "(C)", "(A)"), ("say a word", "(A)", "(B)"),
        ]
    ]  # fmt: skip
    path = tmp_path / "items.json"
    path.write_text(json.dumps(rows))
    result = get_metric("ab", items=str(path), batch_size=3).compute(lm=lm_of(tiny_qwen))
    for row, value in zip(rows, result.values):
        letter = row["answer_matching_behavior"].strip("()")
        if letter == "C":  # options beyond (B): missing and counted, never 0
            assert value is None
        else:
            assert value == pytest.approx(
                hand_ab(model, tokenizer, row["question"], letter), abs=1e-5
            )
    assert (result.n, result.n_missing, result.extra["n_not_ab"]) == (4, 1, 1)
    assert 0 < result.extra["p_ab"] <= 1
    assert [i["answer"] for i in result.extra["items"]] == ["A", "B", "C", "A"]


def test_ab_behaviour_metrics_read_their_shipped_items(tiny_qwen, monkeypatch):
    seen = {}

    def fake(lm, items, batch_size):
        seen["items"] = items
        return torch.tensor([[0.3, 0.1]] * len(items))

    monkeypatch.setattr(behaviour_ab, "ab_probabilities", fake)
    result = get_metric("ab-sycophancy", n=10).compute(lm=lm_of(tiny_qwen))
    items = load_behaviour_items("sycophancy")[:10]
    assert [i.id for i in seen["items"]] == [i.id for i in items]
    expected = [0.75 if i.matching == "A" else 0.25 for i in items]
    assert result.values == pytest.approx(expected)
    assert result.extra["p_ab"] == pytest.approx(0.4)
    with pytest.raises(SteerbenchError, match="needs items"):
        get_metric("ab")


@pytest.mark.parametrize("name", ["ab-refusal", "truthfulqa-mc1"])
def test_likelihood_metrics_see_steering_and_a_neutral_strength_changes_nothing(tiny_qwen, name):
    from helpers import NEGATIVE, POSITIVE

    from steerbench.method import FitContext, get_method

    model, tokenizer = tiny_qwen
    method = get_method("caa")
    artifact = method.fit(FitContext(model, tokenizer), POSITIVE, NEGATIVE)
    metric = get_metric(name, n=4)
    unsteered = metric.compute(lm=lm_of(tiny_qwen)).values
    with method.steer(model, artifact, 0.0):
        neutral = metric.compute(lm=lm_of(tiny_qwen)).values
    with method.steer(model, artifact, 8.0):
        steered = metric.compute(lm=lm_of(tiny_qwen)).values
    assert neutral == unsteered  # bit-identical
    if name.startswith("ab"):
        assert max(abs(a - b) for a, b in zip(steered, unsteered)) > 1e-3


def hand_log_likelihood(model, tokenizer, context: str, choice: str) -> float:
    whole = tokenizer.encode(f"{context} {choice}")
    start = len(tokenizer.encode(context))
    with torch.inference_mode():
        log_probs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
    return float(sum(log_probs[t - 1, whole[t]] for t in range(start, len(whole))))


def test_truthfulqa_mc1_and_mc2_equal_hand_computations(tiny_qwen):
    model, tokenizer = tiny_qwen
    questions = truthfulqa.pick_questions(3, seed=0)
    lm = lm_of(tiny_qwen)
    mc1 = get_metric("truthfulqa-mc1", n=3, batch_size=4).compute(lm=lm)
    mc2 = get_metric("truthfulqa-mc2", n=3, batch_size=5).compute(lm=lm)
    for q, got1, got2 in zip(questions, mc1.values, mc2.values):
        context = truthfulqa.context_of(q["question"])
        ll1 = [hand_log_likelihood(model, tokenizer, context, c) for c, _ in q["mc1"]]
        assert got1 == float(q["mc1"][max(range(len(ll1)), key=ll1.__getitem__)][1])
        ll2 = [hand_log_likelihood(model, tokenizer, context, c) for c, _ in q["mc2"]]
        true_mass = sum(math.exp(v) for v, (_, t) in zip(ll2, q["mc2"]) if t)
        assert got2 == pytest.approx(true_mass / sum(math.exp(v) for v in ll2), rel=1e-4)
    assert len(questions) == 3 and mc1.n == 3 and mc1.extra["n_choices"] > 3 * 3
