"""Reading a results.parquet that anyone may have written (a submission above all): it must
match the schema, carry provenance, stay within size bounds and hold only rows that
``steerbench run`` could have written; anything else is one clear ``SteerbenchError``."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from steerbench.errors import SteerbenchError
from steerbench.metric import METRICS, SPLIT_EVALUATION, SPLIT_VALIDATION
from steerbench.run.results import (
    ADDED_IN_2,
    READABLE_VERSIONS,
    RENAMED_COLUMNS,
    RESULT_FIELDS,
    RESULTS_SCHEMA,
)

MAX_RESULTS_BYTES = 20_000_000
MAX_RESULTS_ROWS = 50_000
MAX_RESULTS_MODELS = 20
"""Bounds on a results file (submissions above all): the default run writes about 200 rows
of one model; a run of 1,000 cells about 12,000."""

CELL_KEY = re.compile(r"[0-9a-f]{16}")
MAX_TEXT = 300
LARGEST = 1e9
"""No metric, count or timing steerbench writes comes near this; a bigger value is forged."""
NAME_COLUMNS = ("model", "method", "method_name", "eval_set", "metric", "config_name")
PROVENANCE_COLUMNS = ("model", "steerbench_version", "cell_key", "created")


def read_results_file(path: Path, *, submission: bool = False) -> pa.Table:
    """A results.parquet that matches the schema and carries provenance, within the size
    limits above, or a clear error; a ``submission``'s names are checked strictly too."""
    table = _read_bounded(path)
    table = table.rename_columns([RENAMED_COLUMNS.get(n, n) for n in table.column_names])
    versions = (
        set(table.column("schema_version").to_pylist())
        if "schema_version" in table.column_names
        else set()
    )
    table = _as_results_schema(path, _upgraded(table, versions))
    if not versions or not versions <= set(READABLE_VERSIONS):
        raise SteerbenchError(
            f"{path}: schema_version {sorted(versions)} is not supported (this steerbench "
            f"reads {', '.join(map(str, READABLE_VERSIONS))}); upgrade steerbench"
        )
    _check_table(path, table)
    for index, row in enumerate(table.to_pylist()):
        problem = row_problem(row, strict_names=submission)
        if problem:
            raise SteerbenchError(
                f"{path}: row {index} ({row['method']!r}, {row['metric']!r}) {problem}; "
                f"only results written by `steerbench run` are accepted"
            )
    return table


def _read_bounded(path: Path) -> pa.Table:
    """The file's table, read only once its size and row count are within bounds."""
    if not path.is_file():
        raise SteerbenchError(f"{path} is not a file; give a results.parquet")
    if path.stat().st_size > MAX_RESULTS_BYTES:
        raise SteerbenchError(
            f"{path} is {path.stat().st_size:,} bytes; a results file may have at most "
            f"{MAX_RESULTS_BYTES:,}"
        )
    try:
        rows = pq.read_metadata(path).num_rows
        if rows > MAX_RESULTS_ROWS:
            raise SteerbenchError(
                f"{path} has {rows:,} rows; a results file may have at most {MAX_RESULTS_ROWS:,}"
            )
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise SteerbenchError(f"{path} is not a readable Parquet file ({err})") from err


def _upgraded(table: pa.Table, versions: set[Any]) -> pa.Table:
    """A version-1 table with the columns version 2 added (no split, role or batch size)."""
    if versions != {1}:
        return table
    for name, value in ADDED_IN_2.items():
        if name not in table.column_names:
            column = pa.array([value] * table.num_rows, RESULTS_SCHEMA.field(name).type)
            table = table.append_column(name, column)
    return table


def _as_results_schema(path: Path, table: pa.Table) -> pa.Table:
    """Exactly the schema's columns, in its order and types, or the error that says why not."""
    missing = [f.name for f in RESULT_FIELDS if f.name not in table.column_names]
    if missing:
        raise SteerbenchError(
            f"{path} is not a steerbench results file: missing columns {', '.join(missing)}"
        )
    try:
        return table.select([f.name for f in RESULT_FIELDS]).cast(RESULTS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
        raise SteerbenchError(
            f"{path}: columns have the wrong types or empty values ({err})"
        ) from err


def _check_table(path: Path, table: pa.Table) -> None:
    """What must hold of the table as a whole: rows, values where the schema needs them,
    few enough models, provenance, and the baseline the others are compared with."""
    if table.num_rows == 0:
        raise SteerbenchError(f"{path} has no rows")
    for field in RESULT_FIELDS:
        if not field.nullable and table.column(field.name).null_count:
            raise SteerbenchError(f"{path}: column {field.name!r} has empty values")
    models = set(table.column("model").to_pylist())
    if len(models) > MAX_RESULTS_MODELS:
        raise SteerbenchError(
            f"{path} has results of {len(models)} models; a results file may have at most "
            f"{MAX_RESULTS_MODELS}"
        )
    for column in PROVENANCE_COLUMNS:
        if any(v in (None, "") for v in table.column(column).to_pylist()):
            raise SteerbenchError(f"{path}: provenance column {column!r} has empty values")
    if not any(table.column("is_unsteered").to_pylist()):
        raise SteerbenchError(
            f"{path} has no unsteered baseline rows; results must include "
            f"the baseline they are compared against"
        )


def row_problem(row: dict[str, Any], *, strict_names: bool = False) -> str | None:
    """What is wrong with one results row, judged by the metric's declared range and the
    invariants every row ``steerbench run`` writes satisfies; None if nothing is.
    ``strict_names`` (submissions): names must not be mistakable for other names."""
    if not CELL_KEY.fullmatch(row["cell_key"] or ""):
        return "has a cell_key that steerbench did not derive (16 hex digits)"
    if row["split"] not in (SPLIT_EVALUATION, SPLIT_VALIDATION):
        return f"has split {row['split']!r} (evaluation or validation)"
    return _name_problem(row, strict_names) or _number_problem(row)


def _name_problem(row: dict[str, Any], strict: bool) -> str | None:
    """A name that is empty, overlong or holds control characters (or, ``strict``, could
    pass for another name)."""
    for column in NAME_COLUMNS:
        text = row[column]
        if not text or len(text) > MAX_TEXT or any(ord(c) < 32 for c in text):
            return f"has an empty, overlong or control-character {column}"
        if strict and (text != text.strip() or not text.isascii() or not text.isprintable()):
            return (
                f"has {column} {text!r}, which could pass for another name (a submission's "
                f"names are printable ASCII without surrounding spaces)"
            )
    return None


def _number_problem(row: dict[str, Any]) -> str | None:
    """A number no run writes: outside the metric's declared range or its own interval,
    impossible counts, a strength where there is none, or past ``LARGEST``."""
    if row["metric"] not in METRICS.names():
        return f"has metric {row['metric']!r}, which is not installed here (install its plugin)"
    low, high = METRICS.get(row["metric"]).value_range
    numbers = {k: row[k] for k in ("value", "ci_low", "ci_high") if row[k] is not None}
    for column, value in numbers.items():
        if not math.isfinite(value) or not low <= value <= high or abs(value) > LARGEST:
            return f"has {column} = {value}, outside {row['metric']}'s range [{low}, {high}]"
    if len(numbers) == 3 and not numbers["ci_low"] <= numbers["value"] <= numbers["ci_high"]:
        return "has a value outside its own confidence interval"
    if not 0 <= row["n_missing"] <= row["n"] <= LARGEST:
        return f"has impossible counts (n = {row['n']}, n_missing = {row['n_missing']})"
    if row["is_unsteered"] != (row["strength"] is None):
        return "has a strength on the baseline or none on a steered cell"
    if row["strength"] is not None and not (
        math.isfinite(row["strength"]) and abs(row["strength"]) <= LARGEST
    ):
        return f"has strength {row['strength']}"
    if row["seconds"] is not None and not 0 <= row["seconds"] <= LARGEST:
        return f"has seconds = {row['seconds']}"
    return None
