"""Shared fixtures: tiny in-process models (see steerbench/testing.py)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the judge-feature cache of the tests is their own, never the user's
os.environ["STEERBENCH_CACHE"] = tempfile.mkdtemp(prefix="steerbench-test-cache-")

from steerbench.testing import ARCHITECTURES, tiny_model


def pip_install_target(source, site) -> None:
    """Install a package (no deps, no network) into ``site``, as a user's pip would."""
    import subprocess

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(params=ARCHITECTURES)
def any_tiny(request):
    """A tiny (model, tokenizer) of each supported test architecture."""
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_qwen():
    return tiny_model("qwen2")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One tiny benchmark run, shared by the runner and leaderboard tests."""
    from test_runner import tiny_config

    from steerbench.run.config import parse_config
    from steerbench.run.runner import Runner
    from steerbench.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path_factory.mktemp("m") / "tiny", "qwen2")
    results = tmp_path_factory.mktemp("results")
    config = parse_config(tiny_config(model_dir), "tiny")
    summary = Runner(config, results, progress=False).run()
    return config, results, summary
