"""What the previous release wrote and imported still works: its module paths (plugins and
notebooks import them), its results files and its cells (written with ``is_baseline``)."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from steerbench._moved import MOVED, new_path
from steerbench.run.results import RESULT_JSON, finished_cells
from steerbench.run.results_checks import read_results_file

PUBLISHED = Path(__file__).resolve().parent / "data" / "release-0.1"
"""The published quick run's results and generations as release 0.1 wrote them (the board
has been rerun since; these stay as they were)."""


@pytest.mark.parametrize("old", sorted(MOVED))
def test_every_old_module_path_is_the_new_module(old):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sys.modules.pop(old, None)
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED[old])
    assert module.__spec__.name == MOVED[old]  # its own spec, not the alias's
    assert any(
        issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught
    )


def test_a_module_inside_a_moved_package_is_not_loaded_twice():
    from steerbench.cli.commands import run
    from steerbench.commands.run import register_run_commands

    assert register_run_commands is run.register_run_commands
    assert new_path("steerbench.commands.run") == "steerbench.cli.commands.run"
    assert new_path("steerbench.commandsx") is None and new_path("steerbench.method") is None


def test_names_the_readme_and_plugins_import_from_old_paths_still_resolve():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from steerbench.data import load_prompts
        from steerbench.levels import instruction, logits_processor
        from steerbench.models import load_model
        from steerbench.validation import Positive
    assert callable(load_prompts) and callable(load_model) and callable(instruction)
    assert callable(logits_processor) and Positive is not None


def test_a_previous_release_results_file_reads_under_todays_column_names():
    assert "is_baseline" in pq.read_schema(PUBLISHED / "results.parquet").names  # written by 0.1
    table = read_results_file(PUBLISHED / "results.parquet")
    assert "is_unsteered" in table.column_names and "is_baseline" not in table.column_names
    unsteered = [
        m for m, u in zip(table["method"].to_pylist(), table["is_unsteered"].to_pylist()) if u
    ]
    assert unsteered and set(unsteered) == {"none"}


def test_a_previous_release_cell_reads_under_todays_column_names(tmp_path):
    rows = pq.read_table(PUBLISHED / "results.parquet").to_pylist()[:2]
    for row in rows:
        row["created"] = str(row["created"])
    cell = tmp_path / "cells" / rows[0]["cell_key"]
    cell.mkdir(parents=True)
    shutil.copy(PUBLISHED / "generations.parquet", cell / "generations.parquet")
    (cell / RESULT_JSON).write_text(
        json.dumps({"schema_version": 2, "info": {"label": "x"}, "rows": rows}, default=str)
    )
    [loaded] = finished_cells(tmp_path)
    assert all("is_unsteered" in r and "is_baseline" not in r for r in loaded["rows"])
    assert [r["is_unsteered"] for r in loaded["rows"]] == [r["is_baseline"] for r in rows]


def test_the_wheel_ships_every_sub_package():
    """pyproject lists packages by hand (methods/, metrics/ install under steerbench.*): a
    sub-package missing there is missing from a wheel although an editable install works."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(("steerbench", *p.parent.relative_to(root / "steerbench").parts)).rstrip(".")
        for p in (root / "steerbench").rglob("__init__.py")
    }
    assert on_disk - listed == set()


def test_a_metric_written_for_0_1_keeps_its_labelled_set_agreement():
    from steerbench.metric import AgreementTable, Metric, Record

    with pytest.warns(DeprecationWarning, match="rename validate to agreement"):

        class Old(Metric):
            validation_uses_models = True

            def compute(self, records: list[Record], *, lm=None, **context):
                return self.result([1.0 for _ in records])

            def validate(self, models=()):
                return AgreementTable("agreement", [{"accuracy": 1.0}])

    assert Old.ships_labels() and Old.agreement_uses_models
    assert Old().agreement().rows == [{"accuracy": 1.0}]
