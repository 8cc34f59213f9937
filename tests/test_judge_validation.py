"""``steerbench validate strongreject``: the labelled sets as shipped, their splits, the
bootstrap AUROC, and the report's pinned baseline numbers."""

import pytest

from steerbench.cli.main import main
from steerbench.studies import judge_validation as jv
from steerbench.testing import save_tiny_model


@pytest.fixture(scope="module")
def sets():
    return jv.labelled_sets()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", "qwen2")


def test_the_labelled_sets_have_their_documented_sizes_and_labels(sets):
    sizes = {name: (len(s), sum(s.helps)) for name, s in sets.items()}
    assert sizes["gptfuzz-train"] == (6160, 1694)
    assert sizes["gptfuzz-evaluate"] == (1540, 545)
    assert sizes["xstest-unsafe"] == (1000, 136)  # 5 models x 200 unsafe prompts
    assert sizes["project-train"][0] + sizes["project-test"][0] == 117
    assert all(len(s.prompts) == len(s.responses) == len(s.groups) == len(s) for s in sets.values())


def test_held_out_sets_share_no_prompt_with_what_a_judge_is_trained_on(sets):
    assert not set(sets["gptfuzz-train"].groups) & set(sets["gptfuzz-evaluate"].groups)
    assert not set(sets["project-train"].groups) & set(sets["project-test"].groups)
    test_prompts = set(sets["project-test"].groups)
    assert len(test_prompts) == round(len(test_prompts | set(sets["project-train"].groups)) / 3)
    assert jv.project("test").responses == sets["project-test"].responses  # seeded


def test_the_bootstrap_interval_holds_the_auroc_and_a_perfect_judge_scores_one():
    helps = [True, False] * 20
    value, low, high = jv.auroc_interval(helps, [float(h) for h in helps])
    assert value == low == high == 1.0
    scores = [0.9, 0.2, 0.4, 0.6, 0.8, 0.1, 0.3, 0.7] * 5
    labels = [True, False, True, False, True, False, False, True] * 5
    value, low, high = jv.auroc_interval(labels, scores)
    assert low <= value <= high and 0 < high - low < 0.5


def test_the_report_pins_the_shipped_baselines(sets):
    rows = jv.validation_report()
    found = {(r["set"], r["classifier"].split()[0]): r for r in rows}
    assert {s for s, _ in found} == set(jv.REPORTED_SETS)
    pinned = {  # README "How far the judge can be trusted": same numbers, same command
        ("gptfuzz-evaluate", "keyword"): 0.728,
        ("gptfuzz-evaluate", "TF-IDF"): 0.974,
        ("xstest-unsafe", "keyword"): 0.886,
        ("xstest-unsafe", "TF-IDF"): 0.991,
        ("project-test", "keyword"): 0.664,
        ("project-test", "TF-IDF"): 0.882,
    }
    for key, auroc in pinned.items():
        row = found[key]
        assert row["auroc"] == pytest.approx(auroc, abs=5e-4), key
        assert row["auroc_low"] <= row["auroc"] <= row["auroc_high"]
        counts = ("true_positive", "false_positive", "false_negative", "true_negative")
        assert sum(row[c] for c in counts) == row["n"] == len(sets[key[0]])
        assert row["true_positive"] + row["false_negative"] == row["helps"]


def test_validate_strongreject_reads_a_judge_model_on_a_sample(tiny_dir, capsys):
    argv = ["validate", "strongreject", "--set", "project-test", "--model", str(tiny_dir)]
    assert main([*argv, "--limit", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:4] == ["set", "classifier", "n", "auroc"]
    body = [line.split("  ")[1].strip() for line in lines[2:]]
    judge = str(tiny_dir)
    assert body == [
        "keyword classifier (compliance = helps)",
        "TF-IDF + logistic regression (baseline)",
        f"{judge}: digit grade alone",
        f"strongreject (keywords, then {judge})",
    ]
    assert main(["validate", "strongreject", "--set", "nope"]) == 2
    assert "unknown labelled set 'nope'" in capsys.readouterr().err
