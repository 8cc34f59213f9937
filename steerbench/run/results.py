"""Result files: per-cell records on disk and the consolidated Parquet tables.

Layout of a results directory::

    cells/<cell_key>/generations.parquet   one row per prompt of the cell
    cells/<cell_key>/result.json           aggregates; written last = the cell is finished
    artifacts/<fit_key>/                   cached method artifacts
    generations.parquet, results.parquet   consolidated from cells/ after every cell
    config.resolved.yaml, splits.json, mlflow.db

A cell is finished exactly when its ``result.json`` exists (atomic rename), so a run
killed at any point and rerun skips finished cells and never duplicates one: the
consolidated tables are rebuilt from ``cells/`` rather than appended to.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_bytes, atomic_write_text, process_alive

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
"""2: ``split`` (evaluation / validation) in both tables, ``role`` and ``batch_size`` in the
results; version-1 files still read (as evaluation rows with unknown role and batch size)."""
READABLE_VERSIONS = (1, 2)
RESULT_JSON = "result.json"

GENERATION_FIELDS = [
    pa.field("schema_version", pa.int32(), nullable=False),
    pa.field("cell_key", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("strength", pa.float64()),
    pa.field("split", pa.string(), nullable=False),
    pa.field("eval_set", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("category", pa.string()),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("response", pa.string(), nullable=False),
]
"""The fixed columns of generations.parquet; after them come the per-item columns that the
run's metrics declare (``Metric.item_columns``), typed as declared."""
GENERATIONS_SCHEMA = pa.schema(GENERATION_FIELDS, metadata={"schema_version": "2"})
COLUMN_TYPES = {"float": pa.float64(), "bool": pa.bool_(), "string": pa.string(), "int": pa.int64()}


def generations_schema(declared: dict[str, str]) -> pa.Schema:
    """The fixed columns plus declared per-item columns (name -> type name)."""
    extra = []
    for name, kind in declared.items():
        if name in GENERATIONS_SCHEMA.names or kind not in COLUMN_TYPES:
            raise SteerbenchError(
                f"per-item column {name!r} ({kind!r}) clashes with a fixed column or has a "
                f"type outside {', '.join(COLUMN_TYPES)}"
            )
        extra.append(pa.field(name, COLUMN_TYPES[kind]))
    return pa.schema(GENERATION_FIELDS + extra, metadata={"schema_version": str(SCHEMA_VERSION)})


RESULT_FIELDS = [
    pa.field("schema_version", pa.int32(), nullable=False),
    pa.field("cell_key", pa.string(), nullable=False),
    pa.field("config_name", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("model_revision", pa.string()),
    pa.field("method", pa.string(), nullable=False),  # the config's label for the method
    pa.field("method_name", pa.string(), nullable=False),  # its registry name
    pa.field("method_params", pa.string(), nullable=False),  # JSON
    pa.field("strength", pa.float64()),
    pa.field("is_unsteered", pa.bool_(), nullable=False),
    pa.field("split", pa.string(), nullable=False),  # "evaluation" (reported), "validation"
    pa.field("eval_set", pa.string(), nullable=False),  # "*" for model-level metrics (mmlu)
    pa.field("role", pa.string()),  # the set's role in the config: target, over_refusal
    pa.field("metric", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("ci_low", pa.float64()),
    pa.field("ci_high", pa.float64()),
    pa.field("n", pa.int64(), nullable=False),
    pa.field("n_missing", pa.int64(), nullable=False),
    pa.field("extra", pa.string()),  # JSON: degenerate counts, chance level, judge ...
    pa.field("seconds", pa.float64()),  # wall time of the whole cell
    pa.field("device", pa.string()),
    pa.field("dtype", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("batch_size", pa.int64()),  # in bf16 it changes a few greedy answers
    pa.field("steerbench_version", pa.string(), nullable=False),
    pa.field("torch_version", pa.string()),
    pa.field("transformers_version", pa.string()),
    pa.field("git_commit", pa.string()),
    pa.field("created", pa.string(), nullable=False),
]
RESULTS_SCHEMA = pa.schema(RESULT_FIELDS, metadata={"schema_version": "2"})
ADDED_IN_2 = {"split": "evaluation", "role": None, "batch_size": None}
"""One row per (cell, evaluation set, metric): long format, so plugins' metrics need no
schema change and every row carries its own CI and provenance."""


def table_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


def write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    atomic_write_bytes(path, table_bytes(rows, schema))


LOCK_FILE = ".steerbench.lock"
LOCK_HOLDER = ".steerbench.lock.json"


@contextmanager
def results_lock(results: Path) -> Iterator[None]:
    """Hold the results directory for one run at a time.

    An OS file lock (released by the kernel when its process dies, also on SIGKILL), so a
    killed run never leaves a stale lock; a second run stops at once with one line that
    names the holder instead of computing every cell a second time."""
    from filelock import FileLock, Timeout

    results.mkdir(parents=True, exist_ok=True)
    lock = FileLock(results / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SteerbenchError(
            f"results directory {results} is in use by {_lock_holder(results)}; wait for that "
            f"run to finish or choose another --results DIR"
        ) from None
    try:
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(
                os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)
            ),
        }
        atomic_write_text(results / LOCK_HOLDER, json.dumps(holder) + "\n")
        yield
    finally:
        lock.release()


def _lock_holder(results: Path, wait: float = 2.0) -> str:
    """Who holds the lock, from the note it writes right after taking it (waiting briefly
    for that note when both runs started at the same moment)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads((results / LOCK_HOLDER).read_text())
            pid = int(info["pid"])
            if info["host"] != socket.gethostname() or (pid != os.getpid() and process_alive(pid)):
                return (
                    f"`{info['command']}` (pid {info['pid']} on {info['host']}, "
                    f"since {info['since']})"
                )
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if time.monotonic() > deadline:
            return "another steerbench process"
        time.sleep(0.05)


def cell_dir(results: Path, key: str) -> Path:
    return results / "cells" / key


def cell_problem(directory: Path) -> str | None:
    """Why a cell directory that has its ``result.json`` cannot be used (None: it can): a
    result that does not parse, or generations that are missing or unreadable."""
    try:
        payload = json.loads((directory / RESULT_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return f"its {RESULT_JSON} is not valid JSON"
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        return f"its {RESULT_JSON} holds no result rows"
    path = directory / "generations.parquet"
    if not path.is_file():
        return "its generations.parquet is missing"
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return "its generations.parquet is damaged"
    return None


_reported: set[Path] = set()


def _usable(directory: Path) -> bool:
    """Whether a cell with a ``result.json`` is complete; a damaged one is reported once
    (named by its directory and label) and counts as not finished, so it is recomputed."""
    problem = cell_problem(directory)
    if problem is None:
        return True
    if directory.resolve() not in _reported:
        _reported.add(directory.resolve())
        label = ""
        with suppress(Exception):
            label = json.loads((directory / RESULT_JSON).read_text())["info"]["label"]
        log.warning(
            "cell %s%s is damaged (%s): it is not counted as finished and is recomputed",
            directory,
            f" ({label})" if label else "",
            problem,
        )
    return False


def is_finished(results: Path, key: str) -> bool:
    directory = cell_dir(results, key)
    return (directory / RESULT_JSON).is_file() and _usable(directory)


def save_cell(
    results: Path,
    key: str,
    generations: list[dict],
    rows: list[dict],
    info: dict,
    columns: dict[str, str] | None = None,
) -> None:
    """Generations first, the result JSON last: its presence marks the cell finished.
    ``columns``: the per-item columns the cell's metrics declare (name -> type)."""
    directory = cell_dir(results, key)
    write_table(directory / "generations.parquet", generations, generations_schema(columns or {}))
    payload = {"schema_version": SCHEMA_VERSION, "info": info, "rows": rows}
    atomic_write_text(directory / RESULT_JSON, json.dumps(payload, indent=1) + "\n")


# Columns renamed since they were first written (old name -> name now); files and cells
# written under an old name are read under the new one.
RENAMED_COLUMNS = {"is_baseline": "is_unsteered"}


def _renamed(row: dict[str, Any]) -> dict[str, Any]:
    return {RENAMED_COLUMNS.get(name, name): value for name, value in row.items()}


def finished_cells(results: Path) -> list[dict]:
    """The result payloads of the complete cells (damaged ones are skipped, with a warning),
    their rows under today's column names."""
    cells = []
    for path in sorted((results / "cells").glob(f"*/{RESULT_JSON}")):
        if _usable(path.parent):
            cell = json.loads(path.read_text())
            if isinstance(cell.get("rows"), list):
                cell["rows"] = [_renamed(row) for row in cell["rows"]]
            cells.append(cell)
    return cells


def consolidate(results: Path) -> tuple[int, int]:
    """Rebuild generations.parquet and results.parquet from the finished cells (cells of
    schema version 1 are upgraded on the way)."""
    rows = [{**ADDED_IN_2, **row} for cell in finished_cells(results) for row in cell["rows"]]
    tables = []
    for path in sorted((results / "cells").glob("*/generations.parquet")):
        if (path.parent / RESULT_JSON).is_file() and _usable(path.parent):
            table = pq.read_table(path)
            if "split" not in table.column_names:
                table = table.append_column(
                    "split", pa.array(["evaluation"] * table.num_rows, pa.string())
                )
            fixed = table.select(GENERATIONS_SCHEMA.names).cast(GENERATIONS_SCHEMA)
            for name in table.column_names:  # then the metrics' declared columns, as stored
                if name not in GENERATIONS_SCHEMA.names:
                    fixed = fixed.append_column(table.schema.field(name), table.column(name))
            tables.append(fixed.replace_schema_metadata(None))
    generations = (
        pa.concat_tables(tables, promote_options="default")
        if tables
        else GENERATIONS_SCHEMA.empty_table()
    )
    buffer = io.BytesIO()
    pq.write_table(generations, buffer)
    atomic_write_bytes(results / "generations.parquet", buffer.getvalue())
    write_table(results / "results.parquet", rows, RESULTS_SCHEMA)
    return generations.num_rows, len(rows)


def read_results_file(path: Path, *, submission: bool = False) -> pa.Table:
    """A results.parquet that matches the schema and carries provenance, within the size
    limits below, or a clear error; a ``submission``'s names are checked strictly too."""
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
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise SteerbenchError(f"{path} is not a readable Parquet file ({err})") from err
    table = table.rename_columns([RENAMED_COLUMNS.get(n, n) for n in table.column_names])
    versions = (
        set(table.column("schema_version").to_pylist())
        if "schema_version" in (table.column_names)
        else set()
    )
    if versions == {1}:  # upgrade: version 1 had no split, role or batch size
        for name, value in ADDED_IN_2.items():
            if name not in table.column_names:
                column = pa.array([value] * table.num_rows, RESULTS_SCHEMA.field(name).type)
                table = table.append_column(name, column)
    missing = [f.name for f in RESULT_FIELDS if f.name not in table.column_names]
    if missing:
        raise SteerbenchError(
            f"{path} is not a steerbench results file: missing columns {', '.join(missing)}"
        )
    try:
        table = table.select([f.name for f in RESULT_FIELDS]).cast(RESULTS_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
        raise SteerbenchError(
            f"{path}: columns have the wrong types or empty values ({err})"
        ) from err
    if not versions or not versions <= set(READABLE_VERSIONS):
        raise SteerbenchError(
            f"{path}: schema_version {sorted(versions)} is not supported (this steerbench "
            f"reads {', '.join(map(str, READABLE_VERSIONS))}); upgrade steerbench"
        )
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
    for column in ("model", "steerbench_version", "cell_key", "created"):
        if any(v in (None, "") for v in table.column(column).to_pylist()):
            raise SteerbenchError(f"{path}: provenance column {column!r} has empty values")
    if not any(table.column("is_unsteered").to_pylist()):
        raise SteerbenchError(
            f"{path} has no unsteered baseline rows; results must include "
            f"the baseline they are compared against"
        )
    for index, row in enumerate(table.to_pylist()):
        problem = row_problem(row, strict_names=submission)
        if problem:
            raise SteerbenchError(
                f"{path}: row {index} ({row['method']!r}, {row['metric']!r}) {problem}; "
                f"only results written by `steerbench run` are accepted"
            )
    return table


MAX_RESULTS_BYTES = 20_000_000
MAX_RESULTS_ROWS = 50_000
MAX_RESULTS_MODELS = 20
"""Bounds on a results file (submissions above all): the default run writes about 200 rows
of one model; a run of 1,000 cells about 12,000."""

CELL_KEY = re.compile(r"[0-9a-f]{16}")
MAX_TEXT = 300
LARGEST = 1e9
"""No metric, count or timing steerbench writes comes near this; a bigger value is forged."""


def row_problem(row: dict[str, Any], *, strict_names: bool = False) -> str | None:
    """What is wrong with one results row, judged by the metric's declared range and the
    invariants every row ``steerbench run`` writes satisfies; None if nothing is.
    ``strict_names`` (submissions): names must not be mistakable for other names."""
    from steerbench.metric import METRICS

    if not CELL_KEY.fullmatch(row["cell_key"] or ""):
        return "has a cell_key that steerbench did not derive (16 hex digits)"
    if row["split"] not in ("evaluation", "validation"):
        return f"has split {row['split']!r} (evaluation or validation)"
    for column in ("model", "method", "method_name", "eval_set", "metric", "config_name"):
        text = row[column]
        if not text or len(text) > MAX_TEXT or any(ord(c) < 32 for c in text):
            return f"has an empty, overlong or control-character {column}"
        if strict_names and (text != text.strip() or not text.isascii() or not text.isprintable()):
            return (
                f"has {column} {text!r}, which could pass for another name (a submission's "
                f"names are printable ASCII without surrounding spaces)"
            )
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
