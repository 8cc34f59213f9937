"""Every way a hostile or unlucky user broke steerbench (issue #22), as a test each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_runner import tiny_config

from steerbench.testing import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("m") / "tiny", "qwen2")


def small_run(model_dir: Path, tmp_path: Path) -> list[str]:
    config = tiny_config(
        model_dir,
        methods=[{"name": "caa", "strengths": [-1.0]}],
        metrics={"refusal": {}, "quality": {}},
        evaluation_limit=2,
        generation={"max_new_tokens": 4, "batch_size": 4},
    )
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "steerbench", "-q", "run", str(path), "--results"]


def test_sigkill_during_mlflow_initialisation_leaves_a_usable_directory(model_dir, tmp_path):
    results = tmp_path / "results"
    command = [*small_run(model_dir, tmp_path), str(results)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    store = []
    while time.time() < deadline and process.poll() is None:
        store = [p for p in results.glob("*mlflow.db*") if p.stat().st_size > 0]
        if store:
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)  # MLflow is migrating its schema right now
    process.wait()
    assert store, "the kill should land while the MLflow store is being created"
    assert not (results / "mlflow_parent_run.json").exists()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    assert len(client.search_runs([experiment.experiment_id])) == 1 + 2  # parent + 2 cells
    assert not list(results.glob(".mlflow.db.init-*"))


def test_a_broken_mlflow_store_is_moved_aside_and_rebuilt(finished_run, tmp_path):
    import shutil

    from steerbench.runner import Runner

    config, source, _ = finished_run
    results = tmp_path / "copy"
    shutil.copytree(source, results)
    (results / "mlflow.db").write_bytes(b"SQLite format 3\0" + b"\x07" * 4000)  # garbage
    Runner(config, results, progress=False).run()
    assert list(results.glob("mlflow.db.broken-*"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    assert len(client.search_runs([experiment.experiment_id])) == 1 + 5  # cells logged again


def test_two_concurrent_runs_one_stops_with_the_holder_named(model_dir, tmp_path):
    results = tmp_path / "results"
    command = [*small_run(model_dir, tmp_path), str(results)]
    first, second = (
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    )
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in (first, second))
    (ok, _), (refused, message) = outcomes
    assert (ok, refused) == (0, 2)
    assert "is in use by" in message and "pid" in message and len(message.strip().splitlines()) == 1
    assert len(list(results.glob("cells/*/result.json"))) == 2


def test_results_files_are_readable_by_the_group_and_others(finished_run):
    _, results, _ = finished_run
    mode = (results / "results.parquet").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
