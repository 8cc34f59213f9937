"""MLflow tracking: a parent run per benchmark, a child run per (model, method, strength).

The default store is a SQLite file in the results directory (MLflow's file store is in
maintenance mode); ``--tracking-uri`` and ``MLFLOW_TRACKING_URI`` override it. Child runs
are tagged with their cell key, so a resumed benchmark logs each finished cell exactly once.
Open the UI with::

    mlflow ui --backend-store-uri sqlite:///results/default/mlflow.db
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from steerbench.errors import SteerbenchError
from steerbench.metric import MODEL_LEVEL

log = logging.getLogger(__name__)


def own_store_uri(results: Path) -> str:
    """The results directory's own MLflow store, ``results/mlflow.db``."""
    return f"sqlite:///{(results / 'mlflow.db').resolve()}"


def tracking_uri(results: Path, override: str | None) -> str:
    return override or os.environ.get("MLFLOW_TRACKING_URI") or own_store_uri(results)


def _store_opens(path: Path) -> bool:
    """Open (creating and migrating if needed) an MLflow SQLite store; False if it is
    broken, e.g. half-migrated by a process killed during its first initialisation.

    MLflow keeps one SQLAlchemy engine per URI for the whole process; the probe's engine
    is closed and forgotten, so that a store rebuilt at the same path is opened afresh."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as err:  # sqlalchemy/alembic raise many types; all mean "unusable"
        log.debug("MLflow store %s does not open: %s", path, err)
        return False
    finally:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = getattr(SqlAlchemyStore, "_engine_map", {}).pop(uri, None)
        if engine is not None:
            engine.dispose()
    return True


def prepare_sqlite_store(path: Path) -> None:
    """Make ``path`` a complete MLflow store, atomically.

    A new store is created and migrated under a temporary name and renamed into place, so
    a kill during MLflow's schema migration leaves only a temporary file (removed by the
    next run) rather than a half-migrated database that breaks every later run. A store
    that does not open is moved aside (``mlflow.db.broken-<time>``) and rebuilt; every
    finished cell is logged to it again from the Parquet results. Callers hold the results
    directory's lock."""
    for stale in path.parent.glob(f".{path.name}.init-*"):
        stale.unlink(missing_ok=True)
    if path.exists():
        if _store_opens(path):
            return
        broken = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, broken)
        log.warning("MLflow store %s was broken; moved it to %s and rebuilt it", path, broken)
    tmp = path.with_name(f".{path.name}.init-{os.getpid()}")
    if not _store_opens(tmp):
        raise SteerbenchError(f"could not create an MLflow store at {path}; check the disk")
    os.replace(tmp, path)


TRACKING_TIMEOUT = 5.0
"""Seconds a tracking server gets to answer its health check before the run stops."""


def check_tracking_uri(uri: str) -> None:
    """Fail within seconds, with one line, on a tracking URI that cannot work: a server
    that does not answer (MLflow's own client retries for minutes) or a SQLite URI whose
    file is not a database. The default store (``results/mlflow.db``) is repaired instead."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=TRACKING_TIMEOUT):
                return
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise SteerbenchError(
                f"the MLflow tracking server {uri} does not answer within "
                f"{TRACKING_TIMEOUT:g} s ({reason}); start it, or drop --tracking-uri and "
                f"MLFLOW_TRACKING_URI to log into the results directory"
            ) from None
    if scheme == "sqlite":
        path = Path(uri.removeprefix("sqlite:///"))
        if path.is_dir() or (path.is_file() and not _is_sqlite(path)):
            raise SteerbenchError(
                f"tracking URI {uri}: {path} is not an SQLite database; give another file"
            )


def _is_sqlite(path: Path) -> bool:
    if path.stat().st_size == 0:
        return True  # an empty file becomes a new database
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


class Tracker:
    """Thin wrapper over the MLflow client; everything it logs is also in the Parquet files."""

    def __init__(self, results: Path, uri: str | None, experiment: str, config: dict) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        for noisy in ("alembic", "mlflow"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.uri = tracking_uri(results, uri)
        own_store = self.uri == own_store_uri(results)
        if own_store:
            prepare_sqlite_store(Path(self.uri.removeprefix("sqlite:///")))
        else:
            check_tracking_uri(self.uri)
        # A client bound to this URI, not mlflow.set_tracking_uri: that would set
        # MLFLOW_TRACKING_URI for the whole process (and its children).
        self.client = MlflowClient(self.uri)
        self.experiment_id = self._experiment(results, own_store, experiment)
        self.parent_id = self._parent(results, experiment, config)

    def _experiment(self, results: Path, own_store: bool, experiment: str) -> str:
        """The experiment's id. In the default store (``results/mlflow.db``) its artifacts
        live in ``results/mlartifacts``, wherever the command runs from (MLflow's default is
        ``./mlruns`` of the first run's working directory); a copied results directory whose
        experiment still points into the original gets a fresh experiment, the old one
        renamed, so it never writes into the original's folder."""
        existing = self.client.get_experiment_by_name(experiment)
        if not own_store:  # the user's own tracking server decides where artifacts go
            return existing.experiment_id if existing else self.client.create_experiment(experiment)
        location = (results / "mlartifacts").resolve().as_uri()
        if existing is not None and existing.artifact_location == location:
            return existing.experiment_id
        if existing is not None:
            log.warning(
                "MLflow experiment %r stores its artifacts in %s, outside %s (a copied results "
                "directory?); starting a new experiment there, the old one kept as %r",
                experiment,
                existing.artifact_location,
                results,
                f"{experiment} ({existing.experiment_id})",
            )
            self.client.rename_experiment(
                existing.experiment_id, f"{experiment} ({existing.experiment_id})"
            )
        return self.client.create_experiment(experiment, artifact_location=location)

    def _parent(self, results: Path, experiment: str, config: dict) -> str:
        marker = results / "mlflow_parent_run.json"
        if marker.is_file():
            saved = json.loads(marker.read_text())
            if saved.get("uri") == self.uri and self._run_exists(saved.get("run_id")):
                return saved["run_id"]
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{experiment} benchmark",
            tags={"steerbench.role": "benchmark"},
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.resolved.json"
            path.write_text(json.dumps(config, indent=1))
            self.client.log_artifact(run.info.run_id, str(path))
        from steerbench.files import atomic_write_text

        atomic_write_text(marker, json.dumps({"uri": self.uri, "run_id": run.info.run_id}))
        return run.info.run_id

    def _run_exists(self, run_id: str | None) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return run_id is not None and self.client.get_run(run_id) is not None
        except MlflowException:
            return False  # the store was rebuilt: start a new parent run

    def logged_cells(self) -> set[str]:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
            max_results=10_000,
        )
        keys = (r.data.tags.get("steerbench.cell_key") for r in runs)
        return {key for key in keys if key is not None}

    def log_cell(
        self, key: str, name: str, params: dict[str, Any], rows: list[dict], artifacts: list[Path]
    ) -> None:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={
                "mlflow.parentRunId": self.parent_id,
                "steerbench.cell_key": key,
                "steerbench.role": "cell",
            },
        )
        run_id = run.info.run_id
        from mlflow.entities import Metric, Param

        params_list = [Param(k, str(v)[:6000]) for k, v in params.items()]
        metrics = []
        for row in rows:
            if row["value"] is None:
                continue
            base = (
                row["metric"]
                if row["eval_set"] == MODEL_LEVEL
                else f"{row['eval_set']}.{row['metric']}"
            )
            if row.get("split", "evaluation") != "evaluation":
                base = f"{row['split']}.{base}"
            for suffix, value in (
                ("", row["value"]),
                (".ci_low", row["ci_low"]),
                (".ci_high", row["ci_high"]),
            ):
                if value is not None and value == value:  # skip NaN
                    metrics.append(Metric(base + suffix, float(value), 0, 0))
        self.client.log_batch(run_id, metrics=metrics, params=params_list)
        for path in artifacts:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id)

    def finish(self) -> None:
        self.client.set_terminated(self.parent_id)
