"""The package's floors hold (import-linter contracts in pyproject.toml: no import from a
lower floor up, no cycle), plugins stay plugins (no core module names a metric, except the
few listed with their reason, and the core never imports a plugin module), and modules and
functions stay small enough to read."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from steerbench.metric import METRICS

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "steerbench"
ALLOWED_NAMES = {
    # prompt sets that share a metric's name (the MMLU questions, StrongREJECT's prompts)
    "run/prompt_sets.py": {"mmlu", "strongreject"},
    # CAA's behaviours, one of which is called refusal (the A/B items, not the metric)
    "run/behaviours.py": {"refusal"},
    # the behaviours' task metrics: CAA's A/B score of each, TruthfulQA's MC2 (and MC1, which
    # reads TruthfulQA's held-out questions too when it is the task); "refusal" is the CAA
    # behaviour of that name (its prompt instructions), not the metric
    "run/behaviour_tasks.py": {"refusal", "truthfulqa-mc1", "truthfulqa-mc2"},
    "integrations/sae_training.py": {"mmlu", "strongreject"},
    # the `steerbench lm-eval` subcommand (lm-eval's own command line)
    "cli/main.py": {"lm-eval"},
    "cli/commands/lm_eval.py": {"lm-eval"},
}
# Studies (the CNA paper's claims are about metrics by name) are the floor that may name them.
STUDIES = "studies/"
CORE_MODULES = sorted(
    str(p.relative_to(CORE))
    for p in CORE.rglob("*.py")
    if not str(p.relative_to(CORE)).startswith(STUDIES)
)


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


def lint_imports(root: Path, package_parent: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the package found in ``package_parent``, with ``root``'s contracts."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--config",
            str(root / "pyproject.toml"),
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        cwd=package_parent,
        env={"PYTHONPATH": str(package_parent)},
        timeout=120,
    )


def test_import_contracts_hold():
    done = lint_imports(ROOT, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "floors KEPT" in done.stdout and "no cycles KEPT" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("model/adapter.py", "import steerbench.run.config", "floors BROKEN"),  # a floor up
        ("stats/ranking.py", "import steerbench.publish", "floors BROKEN"),
        ("run/prompt_sets.py", "import steerbench.run.runner", "no cycles BROKEN"),  # a cycle
    ],
)
def test_import_contracts_catch_a_violation(tmp_path, module, line, broken):
    """The contracts are not vacuous: one stray import in a copy of the package breaks them."""
    copy = tmp_path / "steerbench"
    shutil.copytree(CORE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    done = lint_imports(ROOT, tmp_path)
    assert done.returncode != 0 and broken in done.stdout, done.stdout + done.stderr


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
SOURCES = sorted(
    p for folder in ("steerbench", "methods", "metrics") for p in (ROOT / folder).rglob("*.py")
)


def test_modules_and_functions_stay_small_enough_to_read():
    """No module over 400 lines, no function over 80: a long one is several concepts."""
    too_long = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}() is {length} lines")
    assert not too_long, too_long
