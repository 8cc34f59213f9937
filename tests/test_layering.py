"""Plugins stay plugins: the modules that store, track, compare and publish results never
name a metric (they read what metrics declare), and the core never imports a plugin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from steerbench.metric import METRICS

CORE = Path(__file__).resolve().parents[1] / "steerbench"
RESULT_MODULES = [
    "runner.py",
    "results.py",
    "tracking.py",
    "leaderboard.py",
    "comparisons.py",
    "executors.py",
    "config.py",
    "metric.py",
]


def string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


@pytest.mark.parametrize("module", RESULT_MODULES)
def test_result_handling_names_no_metric(module):
    builtin = [e.name for e in METRICS.entries() if e.source == "builtin"]
    named = string_literals(CORE / module) & set(builtin)
    assert not named, f"{module} names metric(s) {sorted(named)}; read what metrics declare"


def test_core_never_imports_a_plugin_module():
    offenders = []
    for path in CORE.rglob("*.py"):
        if path.parent.name == "commands" or path.name == "reproduce.py":
            # CLI glue for the built-in metrics' validation commands, and the CNA paper's
            # reproduction report, which reads the refusal classifier by design
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith(("steerbench.methods.", "steerbench.metrics.")):
                    offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders
