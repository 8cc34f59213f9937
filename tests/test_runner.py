import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import tiny_config

from steerbench.errors import SteerbenchError
from steerbench.run.config import load_config, parse_config
from steerbench.run.plan import plan
from steerbench.run.results import GENERATIONS_SCHEMA, RESULTS_SCHEMA, generations_schema
from steerbench.run.runner import Runner
from steerbench.testing import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "tiny", "qwen2")


def test_run_writes_parquet_tables_with_the_explicit_schemas(finished_run):
    _config, results, summary = finished_run
    # per cell: 3 + 3 + 3 prompts (harmful, benign, validation harmful) and 3 MMLU questions
    assert summary == {"cells": 5, "ran": 5, "generations": 5 * 12, "result_rows": 5 * 9}
    generations = pq.read_table(results / "generations.parquet")
    declared = {
        "mmlu": "float",  # model-level metrics are scored first
        "refusal": "bool",
        "refusal_label": "string",
        "quality": "float",
        "strongreject": "float",
        "kl-benign": "float",
    }  # the fixed columns, then what the config's metrics declare, in order
    assert generations.schema.equals(generations_schema(declared), check_metadata=False)
    assert generations.schema.names[: len(GENERATIONS_SCHEMA)] == GENERATIONS_SCHEMA.names
    assert generations.num_rows == 5 * (3 + 3 + 3 + 3)
    questions = generations.to_pandas().query("eval_set == '*'")
    assert len(questions) == 5 * 3 and questions["mmlu"].isin([0.0, 1.0]).all()
    assert questions.groupby("cell_key")["prompt_id"].apply(frozenset).nunique() == 1  # paired
    rows = pq.read_table(results / "results.parquet")
    assert rows.schema.equals(RESULTS_SCHEMA, check_metadata=False)
    frame = rows.to_pandas()
    # per cell: refusal+quality on 2 sets, strongreject and kl-benign on 1, mmlu once, and
    # on validation only the metrics that need no model (refusal, quality)
    assert sorted(frame.groupby("cell_key").size().unique()) == [9]
    assert set(frame["method"]) == {"none", "cna", "random-neurons", "caa"}
    assert frame["is_unsteered"].sum() == 9
    validation = frame[frame["split"] == "validation"]
    assert set(validation["metric"]) == {"refusal", "quality"} and len(validation) == 5 * 2
    assert set(frame.loc[frame["eval_set"] == "harmful", "role"]) == {"target"}
    assert set(frame.loc[frame["eval_set"] == "benign", "role"]) == {"over_refusal"}
    assert set(frame["batch_size"]) == {4}
    assert (frame["steerbench_version"] != "").all() and frame["created"].notna().all()
    splits = json.loads((results / "splits.json").read_text())
    discovery, validation = (
        set(splits["discovery"]["positive"]),
        set(splits["validation"]["harmful"]),
    )
    evaluation = set(splits["evaluation"]["harmful"])
    assert discovery.isdisjoint(evaluation) and validation.isdisjoint(discovery | evaluation)
    stored = generations.to_pandas()
    assert set(stored.loc[stored["split"] == "validation", "prompt_id"]) == validation
    prompts = stored[(stored["split"] == "evaluation") & (stored["eval_set"] != "*")]
    assert set(prompts["prompt_id"]) <= evaluation | set(splits["evaluation"]["benign"])
    kl = frame[frame["metric"] == "kl-benign"].set_index("method")["value"]
    assert kl["none"] == 0.0 and kl["caa"] > 0  # the unsteered model does not move


def test_mlflow_has_a_parent_and_a_child_run_per_cell(finished_run):
    import mlflow

    _, results, _ = finished_run
    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    children = runs[runs["tags.steerbench.role"] == "cell"]
    parent = runs[runs["tags.steerbench.role"] == "benchmark"]
    assert len(parent) == 1 and len(children) == 5
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    assert "metrics.harmful.refusal.ci_high" in runs.columns
    assert set(children["params.method"]) == {"none", "cna", "random-neurons", "caa"}


def test_rerun_skips_finished_cells_and_duplicates_nothing(finished_run):
    config, results, _ = finished_run
    before = pq.read_table(results / "results.parquet").to_pandas()
    summary = Runner(config, results, progress=False).run()
    assert summary["ran"] == 0
    after = pq.read_table(results / "results.parquet").to_pandas()
    assert len(after) == len(before)
    assert sorted(after["cell_key"]) == sorted(before["cell_key"])


def test_damaged_finished_cells_are_recomputed_with_a_warning(finished_run, tmp_path, caplog):
    """A finished cell whose generations are gone or whose result is garbage was silently
    dropped (or failed on every run with a traceback naming no cell)."""
    import logging
    import shutil

    from steerbench.run.estimate import describe_plan

    config, original, _ = finished_run
    results = tmp_path / "results"
    shutil.copytree(original, results)
    cells = sorted(p.parent for p in results.glob("cells/*/result.json"))
    (cells[0] / "generations.parquet").unlink()
    (cells[1] / "result.json").write_text("{not json")
    assert describe_plan(config, results).count("[todo]") == 2
    with caplog.at_level(logging.WARNING):
        summary = Runner(config, results, progress=False).run()
    assert summary["ran"] == 2
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{cells[0]}" in warned and "generations.parquet is missing" in warned
    assert f"{cells[1]}" in warned and "not valid JSON" in warned
    before = pq.read_table(original / "generations.parquet").to_pandas()
    after = pq.read_table(results / "generations.parquet").to_pandas()
    assert len(after) == len(before) and set(after["cell_key"]) == set(before["cell_key"])


def test_sigkill_mid_run_loses_no_cell_and_duplicates_none(model_dir, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(model_dir)))
    results = tmp_path / "results"
    command = [
        sys.executable,
        "-m",
        "steerbench",
        "-q",
        "run",
        str(config_path),
        "--results",
        str(results),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(results.glob("cells/*/result.json"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = {p.parent.name: p.read_text() for p in results.glob("cells/*/result.json")}
    assert 2 <= len(finished) < 5, "the kill should land mid-run"
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for key, text in finished.items():  # finished cells were kept, not recomputed
        assert (results / "cells" / key / "result.json").read_text() == text
    frame = pq.read_table(results / "results.parquet").to_pandas()
    assert frame["cell_key"].nunique() == 5
    assert not frame.duplicated(["cell_key", "split", "eval_set", "metric"]).any()
    generations = pq.read_table(results / "generations.parquet").to_pandas()
    assert not generations.duplicated(["cell_key", "eval_set", "prompt_id"]).any()


def test_bookkeeping_runs_once_per_run_and_a_failure_keeps_finished_cells(
    model_dir, tmp_path, monkeypatch
):
    """Consolidating after every cell re-read every finished cell (quadratic in cells); it
    runs once at the end, and once more when a cell fails, so nothing finished is lost."""
    import steerbench.run.runner as runner_module

    calls = []
    real_consolidate = runner_module.consolidate
    monkeypatch.setattr(
        runner_module, "consolidate", lambda results: calls.append(1) or real_consolidate(results)
    )
    real_run_cell = Runner.run_cell

    def fail_third_cell(self, lm, cell, *args):
        if len(list(tmp_path.glob("results/cells/*/result.json"))) == 2:
            raise RuntimeError("cell crashed")
        return real_run_cell(self, lm, cell, *args)

    monkeypatch.setattr(Runner, "run_cell", fail_third_cell)
    config = parse_config(tiny_config(model_dir, metrics={"refusal": {}}), "tiny")
    with pytest.raises(RuntimeError, match="cell crashed"):
        Runner(config, tmp_path / "results", progress=False).run()
    assert len(calls) == 1
    kept = pq.read_table(tmp_path / "results" / "results.parquet").to_pandas()
    assert kept["cell_key"].nunique() == 2
    monkeypatch.setattr(Runner, "run_cell", real_run_cell)
    calls.clear()
    assert Runner(config, tmp_path / "results", progress=False).run()["ran"] == 3
    assert len(calls) == 1


def test_keys_hold_what_determines_the_numbers(model_dir):
    """Rows per batch change bf16 numbers, so they are in the cell key and the fit key; the
    new-token budget changes answers, not fitted artifacts."""
    from steerbench.run.plan import cell_key, fit_key

    def keys(generation):
        config = parse_config(tiny_config(model_dir, generation=generation), "tiny")
        cell = next(c for c in plan(config) if c.method is not None)
        return cell_key(config, cell), fit_key(config, cell.model, cell.method)

    base = keys({"max_new_tokens": 4, "batch_size": 4})
    rows, refill = (
        keys({"max_new_tokens": 4, "batch_size": 8}),
        keys({"max_new_tokens": 4, "batch_size": 4, "refill_rows": 2}),
    )
    budget = keys({"max_new_tokens": 5, "batch_size": 4})
    assert rows[0] != base[0] and rows[1] != base[1]
    assert refill[0] != base[0] and refill[1] == base[1]
    assert budget[0] != base[0] and budget[1] == base[1]


def test_keys_hold_the_dtype_auto_resolves_to_on_this_machine(model_dir, monkeypatch):
    """dtype "auto" is bf16 on a CPU with bf16 instructions and float32 elsewhere: cells
    of the two machines give different answers, so they must not share a key."""
    import steerbench.model.device
    from steerbench.run.plan import cell_key, fit_key

    config = parse_config(tiny_config(model_dir), "tiny")
    config.dtype = "auto"
    cell = next(c for c in plan(config) if c.method is not None)

    def keys(fast_bf16: bool):
        monkeypatch.setattr(steerbench.model.device, "cpu_has_fast_bf16", lambda: fast_bf16)
        return cell_key(config, cell), fit_key(config, cell.model, cell.method)

    bf16, fp32 = keys(True), keys(False)
    assert bf16[0] != fp32[0] and bf16[1] != fp32[1]
    config.dtype = "float32"  # asked for explicitly: the same on every machine
    assert keys(True) == keys(False) == fp32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"modles": ["x"]},
            "'modles': unknown key \\(did you mean 'models'\\?\\); "
            "allowed: behaviour, behaviours, device",
        ),
        ({"methods": [{"name": "cnaa"}]}, "methods\\[0\\].name.*allowed: ace, caa, cast, cna"),
        ({"methods": [{"name": "cna", "strengths": [-1]}]}, "outside the domain"),
        ({"methods": [{"name": "cna", "params": {"k": 3}}]}, "unknown hyper-parameter"),
        ({"metrics": {"bleu": {}}}, "metrics.bleu.*allowed: ab, ab-coordinate-other-ais,"),
        ({"metrics": {"refusal": {"sets": ["nope"]}}}, "must list evaluation sets"),
        ({"evaluation": {"harmful": "no-such-set"}}, "evaluation.harmful.*unknown prompt set"),
        ({"generation": {"max_tokens": 3}}, "generation.*allowed: max_new_tokens"),
        ({"evaluation_limit": 0}, "evaluation_limit"),
    ],
)
def test_config_errors_name_the_key_and_allowed_values(model_dir, change, message):
    with pytest.raises(SteerbenchError, match=message):
        parse_config(tiny_config(model_dir, **change), "bad")


def test_builtin_configs_validate_and_plan():
    default = load_config("default")
    quick = load_config("quick")
    assert default.models == ["qwen2.5-coder-1.5b-instruct"]
    assert quick.models == ["qwen2.5-coder-0.5b-instruct"]
    assert {m.name for m in default.metrics} == {
        "refusal",
        "quality",
        "mmlu",
        "strongreject",
        "kl-benign",
    }
    cells = plan(default)
    assert cells[0].method is None and len(cells) == 1 + sum(
        len(m.strengths) for m in default.methods
    )
    assert len(plan(load_config("scaling"))) == 40  # the linear-cost check (docs/performance.md)


def test_dry_run_and_unwritable_results_dir(model_dir, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(model_dir)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "steerbench",
            "run",
            str(config_path),
            "--dry-run",
            "--results",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "5 cells" in done.stdout and "[todo]" in done.stdout and "cost:" in done.stdout
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "steerbench",
            "run",
            str(config_path),
            "--results",
            str(blocker / "sub"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "not writable" in done.stderr
    assert "Traceback" not in done.stderr
