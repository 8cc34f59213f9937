"""The worked plugin packages in examples/ (a method and a metric) install, are listed, run
in a benchmark, flow into every output and pass their own tests, with no change to
steerbench."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import pip_install_target

from steerbench.testing import save_tiny_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
METHOD_EXAMPLE = EXAMPLES / "steerbench-plugin-example"
METRIC_EXAMPLE = EXAMPLES / "steerbench-metric-example"


def installed(example: Path, site: Path) -> dict[str, str]:
    """The environment of a process that sees ``example`` pip-installed into ``site``."""
    pip_install_target(example, site)
    return {**os.environ, "PYTHONPATH": str(site)}


@pytest.fixture(scope="module")
def method_env(tmp_path_factory):
    return installed(METHOD_EXAMPLE, tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def metric_env(tmp_path_factory):
    return installed(METRIC_EXAMPLE, tmp_path_factory.mktemp("metric-site"))


def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m ARGS`` in ``env``; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def benchmark(tmp_path: Path, arch: str, method: dict, metrics: dict) -> Path:
    """A one-method benchmark config on a tiny model, written to ``tmp_path``."""
    config = {
        "name": "plugin",
        "models": [str(save_tiny_model(tmp_path / "tiny", arch))],
        "dtype": "float32",
        "discovery": {"positive": "jbb-harmful:discovery", "negative": "jbb-benign:discovery"},
        "evaluation": {"harmful": "jbb-harmful:evaluation"},
        "evaluation_limit": 2,
        "methods": [method],
        "metrics": metrics,
        "generation": {"max_new_tokens": 4},
    }
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_example_plugin_is_listed(method_env):
    out = run(method_env, "steerbench", "methods").stdout
    assert any(
        line.startswith("actadd") and "steerbench-plugin-example" in line
        for line in out.splitlines()
    )


def test_example_plugin_runs_in_a_benchmark_config(method_env, tmp_path):
    method = {"name": "actadd", "params": {"layer": 1}, "strengths": [2.0]}
    config = benchmark(tmp_path, "llama", method, {"refusal": {}, "quality": {}})
    run(method_env, "steerbench", "-q", "run", str(config), "--results", str(tmp_path / "r"))
    frame = pq.read_table(tmp_path / "r" / "results.parquet").to_pandas()
    assert set(frame["method"]) == {"none", "actadd"}


@pytest.mark.parametrize("example", [METHOD_EXAMPLE, METRIC_EXAMPLE], ids=["method", "metric"])
def test_example_plugins_own_tests_pass(example, method_env, metric_env):
    env = method_env if example == METHOD_EXAMPLE else metric_env
    run(env, "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests"), cwd=example)


def test_example_metric_plugin_flows_into_every_output(metric_env, tmp_path):
    """Declared per-item columns in generations.parquet, the aggregate in results.parquet,
    MLflow and the leaderboard: no change to steerbench."""
    method = {"name": "caa", "strengths": [-1.0]}
    config = benchmark(tmp_path, "qwen2", method, {"refusal": {}, "answer-length": {}})
    results = tmp_path / "results"
    assert "answer-length" in run(metric_env, "steerbench", "metrics").stdout
    run(metric_env, "steerbench", "-q", "run", str(config), "--results", str(results))
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
    board = tmp_path / "board"
    run(
        metric_env,
        "steerbench",
        "-q",
        "leaderboard",
        "build",
        "--results",
        str(results),
        "--out",
        str(board),
    )
    assert "answer-length (harmful)" in (board / "README.md").read_text()
