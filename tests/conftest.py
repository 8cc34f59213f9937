"""Shared fixtures: tiny in-process models (see tests/tiny_models.py) and an isolated cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tiny_models import ARCHITECTURES, tiny_model  # noqa: E402


@pytest.fixture(params=ARCHITECTURES)
def any_tiny(request):
    """A tiny (model, tokenizer) of each supported test architecture."""
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def tiny_qwen():
    return tiny_model("qwen2")
