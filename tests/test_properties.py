"""Property-based tests (hypothesis) of everything a user or a submitter hands steerbench:
configs, submission files and `evaluate` inputs. Whatever is generated, the answer is a
valid result or one `SteerbenchError` (one line, exit status 2 at the CLI): never another
exception, a write outside the target, or a changed official row. Bounded: each property
runs a fixed number of examples with no shrinking deadline, so the suite's time is fixed."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerbench.errors import SteerbenchError
from steerbench.run.config import load_config, parse_config
from steerbench.run.results import RESULTS_SCHEMA
from steerbench.run.results_checks import read_results_file

BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- values of every kind a YAML document can hold -------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
CONFIG_KEYS = [
    "name",
    "models",
    "methods",
    "metrics",
    "evaluation",
    "validation",
    "evaluation_limit",
    "roles",
    "tasks",
    "generation",
    "seed",
    "split_seed",
    "dtype",
]


def _set_path(document: dict, path: list, value) -> dict:
    """``document`` with the value at ``path`` (keys or list indices) replaced."""
    node = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return document


def _paths(node, prefix=()):
    """Every place in a nested document a value can be put."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield [*prefix, key]
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield [*prefix, index]
            yield from _paths(child, (*prefix, index))


@pytest.fixture(scope="module")
def base_config(tmp_path_factory) -> dict:
    from steerbench.testing import save_tiny_model

    model = save_tiny_model(tmp_path_factory.mktemp("m") / "tiny", "qwen2")
    return tiny_config(model)


@BOUNDED
@given(data=st.data())
def test_any_mutated_config_parses_or_is_one_line(base_config, data):
    document = copy.deepcopy(base_config)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_paths(document))))  # of the document as it is
        _set_path(document, path, data.draw(values))
    if data.draw(st.booleans()):
        document[data.draw(st.sampled_from(CONFIG_KEYS))] = data.draw(values)
    try:
        config = parse_config(document, "mutated")
    except SteerbenchError as err:
        assert "\n" not in str(err)
        return
    assert config.name and ".." not in config.name and "/" not in config.name
    assert all(math.isfinite(s) for m in config.methods for s in (m.strengths or []))


@BOUNDED
@given(text=st.text(max_size=400))
def test_any_yaml_text_loads_or_is_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(str(path))
    except SteerbenchError as err:
        assert "\n" not in str(err)


# -- submission files -------------------------------------------------------------------

COLUMNS = [f.name for f in RESULTS_SCHEMA]


@pytest.fixture(scope="module")
def official(finished_run) -> pd.DataFrame:
    _, results, _ = finished_run
    return pq.read_table(results / "results.parquet").to_pandas()


@BOUNDED
@given(data=st.data())
def test_any_mutated_submission_is_valid_or_one_line_and_never_changes_official_rows(
    finished_run, official, tmp_path_factory, data
):
    from steerbench.publish.sources import load_results

    _, results, _ = finished_run
    frame = official.copy()
    for _ in range(data.draw(st.integers(1, 4))):
        row = data.draw(st.integers(0, len(frame) - 1))
        column = data.draw(st.sampled_from(COLUMNS))
        frame[column] = frame[column].astype(object)
        frame.at[row, column] = data.draw(scalars)
    if data.draw(st.booleans()):  # new cells, as a real submission would add
        frame["cell_key"] = frame["cell_key"].astype(str).str[::-1]
    folder = tmp_path_factory.mktemp("submission")
    path = folder / "submitted.parquet"
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return  # not even a Parquet file could hold it
    try:
        read_results_file(path, submission=True)
    except SteerbenchError as err:
        assert "\n" not in str(err)
        return
    merged = load_results([results], [path])
    kept = merged[merged["submission"].isna()].drop(columns="submission")
    pd.testing.assert_frame_equal(
        kept.reset_index(drop=True), official.reset_index(drop=True), check_dtype=False
    )
    assert sorted(p.name for p in folder.iterdir()) == ["submitted.parquet"]


# -- evaluate inputs --------------------------------------------------------------------

records = st.dictionaries(
    st.sampled_from(["id", "prompt", "response", "category", "other"]), values, max_size=5
)


@BOUNDED
@given(rows=st.lists(records, max_size=4), raw=st.text(max_size=80))
def test_any_evaluate_input_scores_or_is_one_line(tmp_path_factory, rows, raw):
    import json

    from steerbench.cli.commands.metrics import read_records
    from steerbench.metric import get_metric

    path: Path = tmp_path_factory.mktemp("evaluate") / "records.jsonl"
    lines = []
    for row in rows:
        try:
            lines.append(json.dumps(row))
        except (ValueError, TypeError):
            continue
    path.write_text("\n".join([*lines, raw]) + "\n", encoding="utf-8")
    try:
        parsed = read_records(path)
    except SteerbenchError as err:
        assert "\n" not in str(err)
        return
    result = get_metric("refusal").compute(parsed)
    assert len(result.values) == len(parsed)


def test_the_default_and_quick_configs_still_parse():
    """The properties above must not come from refusing everything."""
    for name in ("default", "quick"):
        config = load_config(name)
        assert config.methods and config.tasks


@BOUNDED
@given(
    texts=st.lists(
        st.tuples(st.text(min_size=1, max_size=60), st.text(max_size=60)), min_size=1, max_size=4
    ),
    suffix=st.sampled_from([".jsonl", ".parquet"]),
)
def test_what_evaluate_writes_it_reads_back_whatever_the_text(tmp_path_factory, texts, suffix):
    from steerbench.cli.commands.metrics import read_records, write_rows

    folder = tmp_path_factory.mktemp("roundtrip")
    rows = [{"id": str(i), "prompt": p, "response": r} for i, (p, r) in enumerate(texts)]
    path = folder / f"scores{suffix}"
    write_rows(path, rows)
    back = read_records(path)
    assert [(r.id, r.prompt, r.response) for r in back] == [
        (row["id"], row["prompt"], row["response"]) for row in rows
    ]
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temporary left
