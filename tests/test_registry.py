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


def test_a_second_class_under_a_taken_name_is_an_error_naming_both():
    from steerbench.errors import SteerbenchError
    from steerbench.method import SteeringMethod
    from steerbench.registry import Registry

    registry = Registry("method", "steerbench.methods", "steerbench.methods", base=SteeringMethod)

    @registry.register("twice")
    class First(SteeringMethod):
        pass

    with pytest.raises(SteerbenchError, match="'twice' is registered twice: by built-in module"):

        @registry.register("twice")
        class Second(SteeringMethod):
            pass

    with pytest.raises(SteerbenchError, match="is not a SteeringMethod subclass"):

        @registry.register("not-a-method")
        class Stranger:
            pass


BROKEN = "raise ImportError('the plugin needs a package that is missing')\n"
SHADOW = PLUGIN.replace("class NoOp", "class CNA")


def test_plugins_that_break_or_shadow_are_reported(tmp_path_factory):
    """A plugin that fails to import is named with its error and hides no other plugin;
    one that takes a built-in's name stops with both sources named."""
    src = tmp_path_factory.mktemp("bad_src")
    for package in ("broken_plugin", "shadow_plugin"):
        (src / package).mkdir()
    (src / "broken_plugin" / "__init__.py").write_text(BROKEN)
    (src / "shadow_plugin" / "__init__.py").write_text(SHADOW)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "steerbench-bad-plugins"
        version = "0.1.0"

        [tool.setuptools]
        packages = ["broken_plugin", "shadow_plugin"]

        [project.entry-points."steerbench.methods"]
        broken = "broken_plugin:Thing"
    """)
    )
    site = tmp_path_factory.mktemp("bad_site")
    pip_install_target(src, site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "steerbench", "methods"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "could not load method 'broken' from steerbench-bad-plugins" in done.stderr
    assert "the plugin needs a package that is missing" in done.stderr
    assert any(row.startswith("cna") for row in done.stdout.splitlines())

    entry_points = src / "pyproject.toml"
    entry_points.write_text(
        entry_points.read_text().replace(
            'broken = "broken_plugin:Thing"', 'cna = "shadow_plugin:CNA"'
        )
    )
    site = tmp_path_factory.mktemp("shadow_site")
    pip_install_target(src, site)
    done = subprocess.run(
        [sys.executable, "-m", "steerbench", "methods"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        "'cna' is registered twice: by built-in module steerbench.methods.cna and by "
        "steerbench-bad-plugins" in done.stderr
    )
