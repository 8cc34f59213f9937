"""How results enter ``leaderboard/results/``: ``publish`` copies an official results
directory in; ``submit`` admits anyone's results file, validated (schema and provenance),
under a name derived from its bytes and recorded in the submission ledger."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pandas as pd

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_bytes, atomic_write_text
from steerbench.publish.sources import LEDGER, published_sources, submissions
from steerbench.run.results_checks import read_results_file

PUBLISHED_FILES = (
    "results.parquet",
    "generations.parquet",
    "comparisons.parquet",
    "config.resolved.yaml",
    "splits.json",
)
"""What ``publish`` copies of a results directory: everything the tables are built from."""


def publish(results: Path, leaderboard: Path, name: str | None = None) -> Path:
    """Copy a results directory's tables into ``<leaderboard>/results/<name>/`` (default:
    the directory's name), so the published leaderboard is rebuilt from data in the repo;
    ``comparisons.parquet`` is recomputed from the generations with this release's tests."""
    from steerbench.stats.comparisons import compare_cells

    if not (results / "results.parquet").is_file():
        raise SteerbenchError(f"no results.parquet in {results}; run `steerbench run` first")
    if not (results / "generations.parquet").is_file():
        raise SteerbenchError(
            f"no generations.parquet in {results}: the published tables need the per-item "
            f"results for their paired tests; rerun `steerbench run --results {results}`"
        )
    read_results_file(results / "results.parquet")
    name = name or results.resolve().name
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise SteerbenchError(f"cannot publish under the name {name!r}; pass --name NAME")
    target = leaderboard / "results" / name
    target.mkdir(parents=True, exist_ok=True)
    for file in PUBLISHED_FILES:
        source = results / file
        if file == "comparisons.parquet":
            buffer = io.BytesIO()
            compare_cells(pd.read_parquet(results / "generations.parquet")).to_parquet(
                buffer, index=False
            )
            atomic_write_bytes(target / file, buffer.getvalue())
        elif source.is_file():
            atomic_write_bytes(target / file, source.read_bytes())
    return target


def submit(path: Path, leaderboard: Path) -> Path:
    """Validate a results.parquet and add it to ``leaderboard/results/``.

    The stored name is the hash of the file's bytes, derived here and never from anything
    inside the file, so a submission cannot choose where it lands, overwrite another
    submission, or be added twice; a file that reuses a cell key of the published results
    is refused; its place in the submission order is recorded in the ledger."""
    table = read_results_file(path, submission=True)
    official = {
        key
        for source in published_sources(leaderboard)
        for key in pd.read_parquet(source / "results.parquet", columns=["cell_key"])["cell_key"]
    }
    claimed = sorted(set(table.column("cell_key").to_pylist()) & official)
    if claimed:
        raise SteerbenchError(
            f"{path} reuses cell key {claimed[0]} of the published results; a submission can "
            f"add cells, never restate an official one"
        )
    data = path.read_bytes()
    target = leaderboard / "results" / f"{hashlib.sha256(data).hexdigest()[:20]}.parquet"
    if target.exists():
        raise SteerbenchError(f"{path} was already submitted (as {target}); nothing to do")
    atomic_write_bytes(target, data)
    ledger = leaderboard / "results" / LEDGER
    entries = [{"file": p.name} for p in submissions(leaderboard) if p != target]
    entries.append({"file": target.name})
    atomic_write_text(ledger, json.dumps(entries, indent=1) + "\n")
    return target
