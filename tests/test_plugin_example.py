"""The worked plugin package in examples/ installs, is listed, runs in a benchmark, and
passes its own tests, with no change to steerbench."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import pip_install_target

from steerbench.testing import save_tiny_model

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "steerbench-plugin-example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    pip_install_target(EXAMPLE, site)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_example_plugin_is_listed(plugin_env):
    done = subprocess.run(
        [sys.executable, "-m", "steerbench", "methods"],
        env=plugin_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert any(
        line.startswith("actadd") and "steerbench-plugin-example" in line
        for line in done.stdout.splitlines()
    )


def test_example_plugin_runs_in_a_benchmark_config(plugin_env, tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny", "llama")
    config = {
        "name": "plugin",
        "models": [str(model_dir)],
        "dtype": "float32",
        "discovery": {"positive": "jbb-harmful:discovery", "negative": "jbb-benign:discovery"},
        "evaluation": {"harmful": "jbb-harmful:evaluation"},
        "evaluation_limit": 2,
        "methods": [{"name": "actadd", "params": {"layer": 1}, "strengths": [2.0]}],
        "metrics": {"refusal": {}, "quality": {}},
        "generation": {"max_new_tokens": 4},
    }
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "steerbench",
            "-q",
            "run",
            str(path),
            "--results",
            str(tmp_path / "results"),
        ],
        env=plugin_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    frame = pq.read_table(tmp_path / "results" / "results.parquet").to_pandas()
    assert set(frame["method"]) == {"none", "actadd"}


def test_example_plugin_own_tests_pass(plugin_env):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=plugin_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLE,
    )
    assert done.returncode == 0, done.stdout + done.stderr


METRIC_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "steerbench-metric-example"


@pytest.fixture(scope="module")
def metric_plugin_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("metric-site")
    pip_install_target(METRIC_EXAMPLE, site)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_example_metric_plugin_flows_into_every_output(metric_plugin_env, tmp_path):
    """Declared per-item columns in generations.parquet, the aggregate in results.parquet,
    MLflow and the leaderboard, and the plugin's own tests: no change to steerbench."""
    model_dir = save_tiny_model(tmp_path / "tiny", "qwen2")
    config = {
        "name": "metric-plugin",
        "models": [str(model_dir)],
        "dtype": "float32",
        "discovery": {"positive": "jbb-harmful:discovery", "negative": "jbb-benign:discovery"},
        "evaluation": {"harmful": "jbb-harmful:evaluation"},
        "evaluation_limit": 2,
        "methods": [{"name": "caa", "strengths": [-1.0]}],
        "metrics": {"refusal": {}, "answer-length": {}},
        "generation": {"max_new_tokens": 4},
    }
    path = tmp_path / "metric.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"

    def steerbench(*args: str, cwd=None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "steerbench", "-q", *args],
            env=metric_plugin_env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=cwd,
        )
        assert done.returncode == 0, done.stderr
        return done

    assert "answer-length" in steerbench("metrics").stdout
    steerbench("run", str(path), "--results", str(results))
    generations = pq.read_table(results / "generations.parquet")
    assert generations.schema.field("answer_words").type == "int64"
    assert generations.schema.field("answer_cut_off").type == "bool"
    assert generations.schema.field("refusal_label").type == "string"  # a built-in's, too
    frame = pq.read_table(results / "results.parquet").to_pandas()
    assert set(frame.loc[frame["metric"] == "answer-length", "method"]) == {"none", "caa"}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert "metrics.harmful.answer-length" in runs.columns
    steerbench("leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "board"))
    assert "answer-length (harmful)" in (tmp_path / "board" / "README.md").read_text()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(METRIC_EXAMPLE / "tests"),
        ],
        env=metric_plugin_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=METRIC_EXAMPLE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
