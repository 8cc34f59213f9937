"""Third-party plugins arrive through entry points: a real distribution, built and installed."""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import pip_install_target

from steerbench.method import METHODS

PLUGIN = '''
from contextlib import nullcontext
from dataclasses import dataclass

from steerbench.method import SteeringMethod


class NoOp(SteeringMethod):
    """Does nothing, very reliably."""

    description = "test plugin that leaves the model alone"
    neutral_strength = 0.0
    default_strengths = (0.0,)

    @dataclass
    class Config:
        pass

    def fit(self, ctx, positive, negative):
        return self.make_artifact(ctx, positive, negative, {})

    def steer(self, model, artifact, strength):
        return nullcontext()
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugin_src")
    (src / "noop_plugin").mkdir()
    (src / "noop_plugin" / "__init__.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "steerbench-noop-plugin"
        version = "0.1.0"

        [project.entry-points."steerbench.methods"]
        noop = "noop_plugin:NoOp"
    """)
    )
    site = tmp_path_factory.mktemp("site")
    pip_install_target(src, site)
    return site


def test_installed_plugin_is_listed_and_usable(plugin_site):
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    done = subprocess.run(
        [sys.executable, "-m", "steerbench", "methods"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = next(row for row in done.stdout.splitlines() if row.startswith("noop"))
    assert "steerbench-noop-plugin" in line and "leaves the model alone" in line
    code = "from steerbench.method import get_method; print(type(get_method('noop')).__name__)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.strip() == "NoOp", done.stderr


def test_builtins_are_found_without_any_entry_point():
    entries = {e.name: e.source for e in METHODS.entries()}
    assert {
        "cna": "builtin",
        "caa": "builtin",
        "random-neurons": "builtin",
    }.items() <= entries.items()
