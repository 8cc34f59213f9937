"""Where the leaderboard's data comes from: results directories (a run's own, or one
published into ``leaderboard/results/<name>/``), the submitted files beside them in their
submission order, and the tasks and per-item generations those directories hold. Every
file is validated like the runner's own results before a row of it is used."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from steerbench.errors import SteerbenchError
from steerbench.run.results_checks import read_results_file

log = logging.getLogger(__name__)

LEDGER = "SUBMISSIONS.json"
"""``<leaderboard>/results/SUBMISSIONS.json``: the submitted files in the order submitted."""


def results_paths(sources: Sequence[Path]) -> list[Path]:
    """The results files of ``sources``: a directory's ``results.parquet`` (or, lacking
    one, every ``*.parquet`` in it), or a file given as itself."""
    paths = []
    for source in sources:
        path = source / "results.parquet" if source.is_dir() else source
        if source.is_dir() and not path.is_file():
            paths += sorted(source.glob("*.parquet"))
            continue
        if not path.is_file():
            raise SteerbenchError(f"no results.parquet in {source}; run `steerbench run` first")
        paths.append(path)
    return paths


def _submitted_frames(submitted: Sequence[Path], official_keys: set[str]) -> list[pd.DataFrame]:
    """The submitted files' rows, marked with their file's name; a file that reuses an
    official cell key is left out, with a warning (official results cannot be changed)."""
    frames = []
    for path in submitted:
        frame = read_results_file(path, submission=True).to_pandas()
        claimed = sorted(set(frame["cell_key"]) & official_keys)
        if claimed:
            log.warning(
                "%s reuses official cell key(s) %s; the submission is left out (official "
                "results cannot be changed)",
                path.name,
                ", ".join(claimed[:3]),
            )
            continue
        frames.append(frame.assign(submission=path.stem))
    return frames


def load_results(sources: Sequence[Path], submitted: Sequence[Path] = ()) -> pd.DataFrame:
    """Every row of the official ``sources``, then of the ``submitted`` files in submission
    order, each file validated like the runner's own results. Official rows are never
    changed: a submitted file that reuses an official cell key is left out with a warning.
    Submitted rows are marked (``submission``: the file's name) and ranked on a board of
    their own (``board_labels``); between submissions the earlier one keeps a cell."""
    frames = [read_results_file(path).to_pandas() for path in results_paths(sources)]
    official = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    official_keys = set(official["cell_key"]) if not official.empty else set()
    if not official.empty:
        official["submission"] = None
    frames += _submitted_frames(submitted, official_keys)
    if not frames:
        raise SteerbenchError("no results to build a leaderboard from")
    frame = pd.concat([f if "submission" in f else f.assign(submission=None) for f in frames])
    frame = frame.reset_index(drop=True)
    deduplicated = frame.drop_duplicates(
        subset=["cell_key", "split", "eval_set", "metric"], keep="first"
    )
    if len(deduplicated) < len(frame):
        log.warning(
            "%d result rows repeat a cell that an earlier file already has; the earlier "
            "(official first, then submissions in the order submitted) ones are kept",
            len(frame) - len(deduplicated),
        )
    return deduplicated.reset_index(drop=True)


def load_generations(sources: Sequence[Path]) -> pd.DataFrame:
    """The per-item generations of the results directories among ``sources`` (submitted
    files have none), for the paired tests and the page's examples."""
    frames = []
    for source in sources:
        path = source / "generations.parquet" if source.is_dir() else None
        if path is not None and path.is_file():
            frames.append(pd.read_parquet(path))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not frame.empty and "split" not in frame.columns:
        frame["split"] = "evaluation"
    return frame


def tasks_for(sources: Sequence[Path]) -> list:
    """The tasks of the first results directory whose resolved config declares them, else
    the shipped default config's (submitted files carry no config)."""
    from steerbench.run.config import default_tasks_document, load_yaml, parse_tasks

    for source in sources:
        path = source / "config.resolved.yaml" if source.is_dir() else None
        if path is not None and path.is_file():
            document = load_yaml(path) or {}
            if not isinstance(document, dict):
                raise SteerbenchError(f"{path} is not a config document; rerun the run")
            if document.get("tasks"):
                return parse_tasks(document["tasks"])
    return parse_tasks(default_tasks_document())


def published_sources(leaderboard: Path) -> list[Path]:
    """The results directories published into ``<leaderboard>/results/`` (one folder per
    run; submitted files lie beside them as ``<hash>.parquet``)."""
    folder = leaderboard / "results"
    return sorted(p for p in folder.glob("*") if (p / "results.parquet").is_file())


def submissions(leaderboard: Path) -> list[Path]:
    """The submitted files, in submission order (the ledger's), then any the ledger does not
    list (copied in by hand), by name."""
    folder = leaderboard / "results"
    if not folder.is_dir():
        return []
    present = {p.name: p for p in folder.glob("*.parquet")}
    ledger = folder / LEDGER
    ordered: list[str] = []
    if ledger.is_file():
        try:
            entries = json.loads(ledger.read_text(encoding="utf-8"))
            ordered = [e["file"] for e in entries if isinstance(e, dict) and "file" in e]
        except (ValueError, TypeError) as err:
            raise SteerbenchError(f"{ledger} is damaged ({err}); restore it from git") from err
    names = [n for n in dict.fromkeys(ordered) if n in present]
    names += sorted(set(present) - set(names))
    return [present[n] for n in names]
