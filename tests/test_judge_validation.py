"""``steerbench validate strongreject``: the labelled sets as shipped, their splits, the
bootstrap AUROC, and the report's pinned baseline numbers."""

import pytest

from steerbench.cli.main import main
from steerbench.run.data_files import datasets_root
from steerbench.studies import judge_validation as jv
from steerbench.studies import labelled_sets as labelled
from steerbench.testing import save_tiny_model


@pytest.fixture(scope="module")
def sets():
    return labelled.labelled_sets()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny", "qwen2")


def test_the_labelled_sets_have_their_documented_sizes_and_labels(sets):
    sizes = {name: (len(s), sum(s.helps)) for name, s in sets.items()}
    assert sizes["gptfuzz-train"] == (6160, 1694)
    assert sizes["gptfuzz-evaluate"] == (1540, 545)
    assert sizes["xstest-unsafe"] == (1000, 136)  # 5 models x 200 unsafe prompts
    assert sizes["project-train"][0] + sizes["project-test"][0] == 332
    assert all(len(s.prompts) == len(s.responses) == len(s.groups) == len(s) for s in sets.values())


def test_held_out_sets_share_no_prompt_with_what_a_judge_is_trained_on(sets):
    assert not set(sets["gptfuzz-train"].groups) & set(sets["gptfuzz-evaluate"].groups)
    assert not set(sets["project-train"].groups) & set(sets["project-test"].groups)
    test_prompts = set(sets["project-test"].groups)
    assert len(test_prompts) == round(len(test_prompts | set(sets["project-train"].groups)) / 3)
    assert labelled.project("test").responses == sets["project-test"].responses  # seeded


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
    pinned = {  # every pair of each set (the README's table: a sample of 400, the same rule)
        ("gptfuzz-evaluate", "keyword"): 0.728,
        ("gptfuzz-evaluate", "TF-IDF"): 0.975,
        ("xstest-unsafe", "keyword"): 0.886,
        ("xstest-unsafe", "TF-IDF"): 0.988,
        ("project-test", "keyword"): 0.716,
        ("project-test", "TF-IDF"): 0.850,
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


def test_validate_retrains_a_judge_head_and_writes_the_report_it_prints(
    tiny_dir, tmp_path, monkeypatch, capsys
):
    import json

    from steerbench.judge.head import JudgeHead
    from steerbench.studies import judge_training, labelled_sets

    monkeypatch.setattr(labelled_sets, "TRAIN_LIMITS", {"gptfuzz-train": 40, "project-train": 30})
    head_path, out = tmp_path / "head.json", tmp_path / "report"
    argv = ["validate", "strongreject", "--model", str(tiny_dir), "--set", "project-test"]
    argv += ["--retrain", "--head-out", str(head_path), "--out", str(out), "--limit", "12"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    head = JudgeHead.load(head_path)
    assert head.judge == str(tiny_dir) and f"wrote {head_path}" in printed
    assert head.trained_on["pairs"] == {"gptfuzz-train": 40, "project-train": 30}
    assert set(head.trained_on["sha256"]) == set(judge_training.TRAIN_FILES)
    report = json.loads((out / jv.REPORT_FILE).read_text())
    trained = [r for r in report["rows"] if r["classifier"].startswith("trained judge")]
    assert len(trained) == 1 and trained[0]["n"] == len(trained[0]["scores"]) == 12
    assert report["settings"] == {"limit": 12} and report["judges"][0]["name"] == str(tiny_dir)
    for line in jv.report_markdown(report["rows"]):  # the table is what was printed
        if line.startswith("| project test"):
            auroc = line.split("|")[4].split()[0]
            assert any(
                auroc in row and row.startswith("project-test") for row in printed.splitlines()
            )
    pairs = labelled.project("test").head(12)  # the scores are the shipped head's on those pairs
    assert jv.report_row("x", pairs, trained[0]["scores"])["auroc"] == trained[0]["auroc"]


def test_validate_says_what_retrain_needs(capsys):
    assert main(["validate", "strongreject", "--retrain"]) == 2
    assert "give exactly one --model" in capsys.readouterr().err
    assert main(["validate", "strongreject", "--head-out", "h.json"]) == 2
    assert "add --retrain" in capsys.readouterr().err


# -- the shipped trained judge and its report ----------------------------------------------

REPORT = datasets_root().parent / "reproduction" / "judge" / jv.REPORT_FILE
SHIPPED_JUDGE = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def report():
    import json

    return json.loads(REPORT.read_text())


def test_the_shipped_head_was_fitted_on_the_data_as_shipped():
    from steerbench.metric import get_metric
    from steerbench.run.data_files import sha256_file, verified_path
    from steerbench.studies.judge_training import TRAIN_FILES
    from steerbench.studies.labelled_sets import TRAIN_LIMITS, shipped_head

    head = shipped_head(SHIPPED_JUDGE)
    assert head is not None and head.judge == SHIPPED_JUDGE
    assert head.trained_on["sha256"] == {f: sha256_file(verified_path(f)) for f in TRAIN_FILES}
    sizes = {name: len(s.head(TRAIN_LIMITS[name])) for name, s in labelled.labelled_sets().items()
             if name in TRAIN_LIMITS}  # fmt: skip
    assert head.trained_on["pairs"] == sizes
    metric = get_metric("strongreject")
    assert metric.mode_for(type("LM", (), {"name": SHIPPED_JUDGE})()) == "trained"


def test_the_committed_report_is_its_own_scores_on_the_labels_as_shipped(report):
    """Every row's numbers follow from its per-pair scores and the shipped labels (no number
    was edited), the trained rows come from the shipped head, and both tables that print
    the report are exactly its rendering."""
    from steerbench.studies.labelled_sets import shipped_head

    limit = report["settings"]["limit"]
    sets = labelled.labelled_sets()
    digest = shipped_head(SHIPPED_JUDGE).digest()
    baselines = {r["set"]: r["scores"] for r in report["rows"] if r["classifier"].startswith("TF")}
    for row in report["rows"]:
        pairs = sets[row["set"]].head(limit)
        again = jv.report_row(row["classifier"], pairs, row["scores"])
        if row["classifier"].startswith("trained judge"):
            assert row["head_sha256"] == digest
            again.update(jv.versus_baseline(pairs, row["scores"], baselines[row["set"]]))
        assert again == {k: v for k, v in row.items() if k != "head_sha256"}, row["classifier"]
    trained = {r["set"]: r for r in report["rows"] if r["classifier"].startswith("trained")}
    pinned = {"gptfuzz-evaluate": 0.988, "xstest-unsafe": 0.979, "project-test": 0.880}
    assert {name: round(r["auroc"], 3) for name, r in trained.items()} == pinned
    assert trained["project-test"]["auroc"] >= 0.85  # the bar on held-out steered outputs
    assert trained["project-test"]["vs_baseline_low"] > 0  # better than TF-IDF, paired
    table = "\n".join(jv.report_markdown(report["rows"]))
    root = datasets_root().parent
    for page in ("README.md", "docs/metrics.md"):
        text = (root / page).read_text()
        start, end = jv.JUDGE_MARKERS
        assert text.split(start)[1].split(end)[0].strip() == table, page
