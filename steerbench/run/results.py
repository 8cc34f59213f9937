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
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_bytes, atomic_write_text
from steerbench.method import UNSTEERED
from steerbench.metric import METRICS, MODEL_LEVEL, MetricResult, Record
from steerbench.run.plan import Cell

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

Scored = tuple[str, str, MetricResult]
"""One metric's result on one set of a cell: (split, eval_set, result)."""


@dataclass(frozen=True)
class CellRun:
    """One finished cell and how it ran: what every row it writes carries besides numbers."""

    key: str
    cell: Cell
    config_name: str
    model_revision: str | None
    seconds: float  # wall time of the whole cell
    seed: int
    batch_size: int
    machine: dict[str, str]  # device, dtype (steerbench.run.provenance.machine)
    provenance: dict[str, Any]  # versions and commit (steerbench.run.provenance.provenance)


def generation_rows(
    run: CellRun, records: Mapping[tuple[str, str], Sequence[Record]], scored: list[Scored]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A cell's generations.parquet rows: one per record, with every metric's per-item
    columns, then one per item a model-level metric lists; and those columns' declared
    types (name -> type, in the order the metrics were scored). No metric is named here."""
    per_item: dict[tuple[str, str], dict[str, list]] = {}
    declared: dict[str, str] = {}
    model_items: list[dict] = []
    for split, name, result in scored:
        if name == MODEL_LEVEL:  # model-level metrics (MMLU): their items, when they list them
            model_items += model_level_rows(split, result)
            if result.extra.get("items"):
                declared[result.metric] = "float"
            continue
        declared.update(METRICS.get(result.metric).declared_columns())
        per_item.setdefault((split, name), {}).update(result.item_table())
    cell = run.cell
    head = {
        "schema_version": SCHEMA_VERSION,
        "cell_key": run.key,
        "model": cell.model,
        "method": cell.method_label,
        "strength": cell.strength,
    }
    rows = []
    for (split, name), items in records.items():
        columns = per_item.get((split, name), {})
        for i, record in enumerate(items):
            row = {
                **head,
                "split": split,
                "eval_set": name,
                "prompt_id": record.id,
                "category": record.category,
                "prompt": record.prompt,
                "response": record.response,
            }
            row.update({column: values[i] for column, values in columns.items()})
            rows.append(row)
    return rows + [{**head, **item} for item in model_items], declared


def model_level_rows(split: str, result: MetricResult) -> list[dict[str, Any]]:
    """A model-level metric's items (``extra["items"]``: dicts with an ``id``, MMLU's
    questions) as generation rows of set ``MODEL_LEVEL``, so cells can be compared on them
    question by question; the row's response is the item's ``predicted`` answer."""
    items = result.extra.get("items") or []
    return [
        {
            "split": split,
            "eval_set": MODEL_LEVEL,
            "prompt_id": str(item["id"]),
            "category": item.get("subject"),
            "prompt": "",
            "response": str(item.get("predicted", "")),
            result.metric: value,
        }
        for item, value in zip(items, result.values)
    ]


def result_rows(
    run: CellRun, scored: list[Scored], role_of: Callable[[str], str | None]
) -> list[dict[str, Any]]:
    """A cell's results rows, one per scored (split, set, metric), in ``RESULT_FIELDS``
    order; ``role_of``: a set's role in the config."""
    cell, created = run.cell, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [
        {
            "schema_version": SCHEMA_VERSION,
            "cell_key": run.key,
            "config_name": run.config_name,
            "model": cell.model,
            "model_revision": run.model_revision,
            "method": cell.method_label,
            "method_name": cell.method.name if cell.method else UNSTEERED,
            "method_params": json.dumps(cell.params, sort_keys=True),
            "strength": cell.strength,
            "is_unsteered": cell.method is None,
            "split": split,
            "eval_set": name,
            "role": role_of(name),
            "metric": result.metric,
            "value": _finite(result.aggregate),
            "ci_low": _finite(result.ci_low),
            "ci_high": _finite(result.ci_high),
            "n": result.n,
            "n_missing": result.n_missing,
            "extra": json.dumps(_stored_extra(result), sort_keys=True, default=str),
            "seconds": round(run.seconds, 2),
            **run.machine,
            "seed": run.seed,
            "batch_size": run.batch_size,
            "created": created,
            **run.provenance,
        }
        for split, name, result in scored
    ]


def cell_info(run: CellRun) -> dict[str, Any]:
    """The ``info`` of a cell's result.json: what it is, for people and for MLflow."""
    cell = run.cell
    return {
        "label": cell.label,
        "model": cell.model,
        "method": cell.method_label,
        "params": cell.params,
        "strength": cell.strength,
        "seconds": round(run.seconds, 2),
    }


def _stored_extra(result: MetricResult) -> dict[str, Any]:
    """A result's extras without its per-item lists (those are in generations.parquet)."""
    return {k: v for k, v in result.extra.items() if k not in ("items", "judgements")}


def _finite(value: float | None) -> float | None:
    return None if value is None or value != value else float(value)


def table_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


def write_table(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    atomic_write_bytes(path, table_bytes(rows, schema))


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


def finished_cell(results: Path, directory: str) -> dict | None:
    """The result payload in ``cells/<directory>`` (a cell, or a part of one), its rows
    under today's column names; None when it is not finished or damaged."""
    if not is_finished(results, directory):
        return None
    cell = json.loads((cell_dir(results, directory) / RESULT_JSON).read_text())
    if isinstance(cell.get("rows"), list):
        cell["rows"] = [_renamed(row) for row in cell["rows"]]
    return cell


def finished_cells(results: Path) -> list[dict]:
    """The result payloads of the complete cells and parts (damaged ones are skipped, with a
    warning), their rows under today's column names."""
    paths = sorted((results / "cells").glob(f"*/{RESULT_JSON}"))
    found = (finished_cell(results, path.parent.name) for path in paths)
    return [cell for cell in found if cell is not None]


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
