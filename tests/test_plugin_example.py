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
