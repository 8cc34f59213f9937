"""Plugins stay plugins: no core module names a metric (they read what metrics declare;
the few exceptions are listed with their reason), and the core never imports a plugin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from steerbench.metric import METRICS

CORE = Path(__file__).resolve().parents[1] / "steerbench"
ALLOWED_NAMES = {
    # prompt sets that share a metric's name (the MMLU questions, StrongREJECT's prompts)
    "data.py": {"mmlu", "strongreject"},
    "sae.py": {"mmlu", "strongreject"},
    # the `steerbench lm-eval` subcommand (lm-eval's own command line)
    "cli.py": {"lm-eval"},
    "commands/harness.py": {"lm-eval"},
    # the CNA paper's claims are about these metrics by name
    "reproduce.py": {"mmlu", "quality", "refusal", "strongreject"},
}
CORE_MODULES = sorted(str(p.relative_to(CORE)) for p in CORE.rglob("*.py"))


def string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_names_no_metric(module):
    """Storage, tracking, the leaderboard, the CLI...: they read what metrics declare."""
    builtin = [e.name for e in METRICS.entries() if e.source == "builtin"]
    named = string_literals(CORE / module) & set(builtin)
    assert named == ALLOWED_NAMES.get(module, set()), (
        f"{module} names metric(s) {sorted(named)}; read what metrics declare"
    )


def test_core_never_imports_a_plugin_module():
    offenders = []
    for path in CORE.rglob("*.py"):
        if path.name == "reproduce.py":  # the paper's report reads the refusal classifier
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
