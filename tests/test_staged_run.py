"""``evaluate: chosen``: every strength on the validation sets, then the evaluation sets for
only the strengths the tasks choose there, by the leaderboard's own rule."""

import pandas as pd
import pytest
from helpers import tiny_config

from steerbench.errors import SteerbenchError
from steerbench.publish.sources import load_results
from steerbench.publish.verdicts import chosen_strengths, standings
from steerbench.run.cell_parts import part_directory
from steerbench.run.config import parse_config
from steerbench.run.plan import cell_key, plan
from steerbench.studies.benchmark import check_choosable, run_benchmark
from steerbench.testing import save_tiny_model

STAGED = {
    "evaluate": "chosen",
    "validation": {"harmful": "jbb-harmful:validation", "benign": "jbb-benign:validation"},
    "methods": [
        {"name": "caa", "strengths": [-2.0, -1.0, 1.0, 2.0]},
        {"name": "prompt", "strengths": [-1.0, 1.0]},
    ],
    "metrics": {"refusal": {}, "quality": {}, "mmlu": {"n": 4, "validation_n": 3}},
    "tasks": {  # a tiny random model refuses nothing, but its MMLU answers move
        "raise-mmlu": {
            "metric": "mmlu",
            "goal": "maximize",
            "constraints": [
                {"metric": "refusal", "role": "over_refusal", "max_rise": 0.5},
                {"metric": "quality", "min": 0.5},
            ],
        },
        "remove-refusal": {
            "metric": "refusal",
            "goal": "minimize",
            "constraints": [{"metric": "mmlu", "role": "model", "max_drop": 1.0}],
        },
    },
}


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory):
    model_dir = save_tiny_model(tmp_path_factory.mktemp("m") / "tiny", "qwen2")
    results = tmp_path_factory.mktemp("results")
    config = parse_config(tiny_config(model_dir, **STAGED), "tiny")
    summary = run_benchmark(config, results, progress=False)
    return config, results, summary


def test_every_strength_is_swept_and_only_the_chosen_ones_are_evaluated(staged_run):
    config, results, summary = staged_run
    cells = plan(config)
    frame = load_results([results])
    validation = frame[frame["split"] == "validation"]
    chosen = chosen_strengths(validation, config.tasks)
    evaluated = {
        (r.model, r.method, None if pd.isna(r.strength) else r.strength)
        for r in frame[frame["split"] == "evaluation"].itertuples()
    }
    assert evaluated == chosen  # the unsteered cell is among them
    assert summary["cells"] == len(cells) == 7 and summary["evaluated"] == len(chosen)
    assert 2 <= len(chosen) < 7
    for cell in cells:
        key = cell_key(config, cell)
        assert (results / "cells" / part_directory(key, "validation") / "result.json").is_file()
        is_chosen = (cell.model, cell.method_label, cell.strength) in chosen
        has_evaluation = (results / "cells" / part_directory(key, "evaluation")).is_dir()
        assert has_evaluation == is_chosen
    # the sweep measured every constraint the tasks read on validation items
    assert {"refusal", "quality", "mmlu"} <= set(validation["metric"])
    assert set(validation["eval_set"]) == {"harmful", "benign", "*"}


def test_no_reported_number_comes_from_an_item_that_chose_a_strength(staged_run):
    _config, results, _ = staged_run
    generations = pd.read_parquet(results / "generations.parquet")
    for eval_set, rows in generations.groupby("eval_set"):
        chose = set(rows.loc[rows["split"] == "validation", "prompt_id"])
        reported = set(rows.loc[rows["split"] == "evaluation", "prompt_id"])
        assert chose and reported and chose.isdisjoint(reported), eval_set
    assert len(set(generations.loc[generations["eval_set"] == "*", "prompt_id"])) == 4 + 3


def test_the_leaderboard_ranks_the_evaluated_cells_on_their_evaluation_numbers(staged_run):
    config, results, _ = staged_run
    frame = load_results([results])
    board = standings(frame, config.tasks, None)
    ranked = 0
    for ranking in board.rankings:
        assert ranking.chosen_on == "validation"
        for _, row in ranking.ranking.iterrows():
            if row["strength"] is not None:  # a chosen strength: its evaluation numbers
                assert row["mmlu"] is not None and row["refusal"] is not None
                ranked += 1
    assert ranked >= 1


def test_a_rerun_recomputes_nothing(staged_run):
    config, results, _ = staged_run
    again = run_benchmark(config, results, progress=False)
    assert again["ran"] == 0 and again["evaluated_now"] == 0


def test_a_config_that_cannot_choose_on_validation_is_refused(tmp_path):
    no_mmlu_validation = {**STAGED, "metrics": {"refusal": {}, "quality": {}, "mmlu": {"n": 4}}}
    config = parse_config(tiny_config(tmp_path, **no_mmlu_validation), "tiny")
    with pytest.raises(SteerbenchError, match="measures no validation items of its own"):
        check_choosable(config)
    no_benign = {**STAGED, "validation": {"harmful": "jbb-harmful:validation"}}
    config = parse_config(tiny_config(tmp_path, **no_benign), "tiny")
    with pytest.raises(SteerbenchError, match="'benign' has no validation set"):
        check_choosable(config)


def test_the_built_leaderboard_marks_the_strengths_measured_on_validation_only(
    staged_run, tmp_path
):
    from steerbench.publish.leaderboard import build

    _config, results, _ = staged_run
    out = build([results], tmp_path / "board")
    markdown = (out / "README.md").read_text()
    sweep = markdown.split("### Full sweep", 1)[1]
    assert "(val.)" in sweep and "measured on the validation split only" in sweep
    assert "(val.)" not in markdown.split("### Full sweep", 1)[0]  # rankings: evaluation only
    assert "measured on the validation split only" in (out / "index.html").read_text()


def test_the_dry_run_tells_swept_from_evaluated_cells(staged_run):
    from steerbench.run.estimate import describe_plan

    config, results, summary = staged_run
    plan_text = describe_plan(config, results)
    assert plan_text.count("[done]") == summary["evaluated"]
    assert plan_text.count("[swept]") == summary["cells"] - summary["evaluated"]
    assert "cost (evaluate: chosen): 0 validation passes" in plan_text
