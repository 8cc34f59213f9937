"""The benchmark runner: every (model, method, strength) cell of a config, resumably.

For each model: load once, fit each method once (artifacts cached on disk), then for the
unsteered model and each strength generate on every set and compute every metric. Each
cell is keyed by a hash of everything that determines it (``steerbench.run.plan``) and
saved atomically when finished (``steerbench.run.results``), so reruns skip it.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_text
from steerbench.metric import SPLIT_EVALUATION, SPLIT_VALIDATION
from steerbench.run.cell_parts import Part, part_directory, part_finished, splits_of
from steerbench.run.config import BenchmarkConfig, MethodSpec, MetricSpec
from steerbench.run.lock import check_writable, results_lock
from steerbench.run.plan import (
    UNSTEERED,
    Cell,
    cell_key,
    discovery_prompts,
    evaluation_sets,
    fit_batch_size,
    fit_groups,
    fit_key,
    plan,
    resolved_generation,
    validation_sets,
)
from steerbench.run.prompt_sets import PromptRecord
from steerbench.run.provenance import machine, provenance
from steerbench.run.results import (
    CellRun,
    Scored,
    cell_info,
    consolidate,
    finished_cell,
    generation_rows,
    result_rows,
    save_cell,
)
from steerbench.run.scoring import (
    PhaseTimer,
    RecordSets,
    generate_records,
    score_metrics,
)
from steerbench.stats.comparisons import write_comparisons

log = logging.getLogger(__name__)


class Runner:
    """Runs a config into a results directory; see the module docstring."""

    def __init__(
        self,
        config: BenchmarkConfig,
        results: Path,
        *,
        tracking_uri: str | None = None,
        progress: bool = True,
        executor: Any = None,
        part: Part | None = None,
    ) -> None:
        self.config = config
        self.part = part
        """None: whole cells; "validation" or "evaluation": that part of each cell only."""
        self.results = results
        self.tracking_uri = tracking_uri
        self.progress = progress
        # None: this process; else e.g. steerbench.run.executors.RayExecutor
        self.executor = executor
        self.provenance = provenance()

    @cached_property
    def metrics(self) -> list[tuple[MetricSpec, Any]]:
        """(spec, metric) of the config, built once per run: what a metric remembers (a
        judge's answers) carries over from cell to cell, as in one process it always did."""
        from steerbench.metric import get_metric

        seed = self.config.seed
        return [(s, get_metric(s.name, **{"seed": seed, **s.options})) for s in self.config.metrics]

    def write_run_files(
        self, sets: dict[str, list[PromptRecord]], validation: dict[str, list[PromptRecord]]
    ) -> None:
        atomic_write_text(
            self.results / "config.resolved.yaml",
            yaml.safe_dump(self.config.to_dict(), sort_keys=False),
        )
        discovery = {
            k: [r.id for r in discovery_prompts(self.config, k)] for k in self.config.discovery
        }
        splits = {
            "split_seed": self.config.split_seed,
            "discovery": discovery,
            "validation": {k: [r.id for r in v] for k, v in validation.items()},
            "evaluation": {k: [r.id for r in v] for k, v in sets.items()},
        }
        atomic_write_text(self.results / "splits.json", json.dumps(splits, indent=1))

    # -- the grid ---------------------------------------------------------------------

    def run(self, cells: list[Cell] | None = None) -> dict[str, int]:
        """Run ``cells`` (default: the config's whole plan), or this runner's part of them."""
        check_writable(self.results)
        with results_lock(self.results):
            self.preflight()
            return self._run_locked(plan(self.config) if cells is None else cells)

    def finished(self, cell: Cell) -> bool:
        return part_finished(self.results, cell_key(self.config, cell), self.part)

    def preflight(self) -> None:
        """What can be checked without loading weights, before any work: the device exists,
        every model can be found and every metric's own preflight (a remote judge answers)
        passes."""
        from steerbench.model.device import resolve_device
        from steerbench.model.loading import check_model_spec

        if self.executor is None:  # a cluster's devices are its nodes' business
            resolve_device(self.config.device)
        for model in self.config.models:
            check_model_spec(model)
        for spec, metric in self.metrics:
            try:
                metric.preflight()
            except SteerbenchError as err:
                raise SteerbenchError(f"metric {spec.name!r}: {err}") from err

    def _run_locked(self, cells: list[Cell]) -> dict[str, int]:
        from steerbench.run.tracking import Tracker

        sets = evaluation_sets(self.config)
        self.write_run_files(sets, validation_sets(self.config))
        tracker = Tracker(self.results, self.tracking_uri, self.config.name, self.config.to_dict())
        done_before = sum(map(self.finished, cells))
        if done_before:
            log.info("Resuming: %d of %d cells already finished", done_before, len(cells))
        bar = tqdm(
            total=len(cells),
            initial=done_before,
            desc="cells",
            unit="cell",
            disable=not self.progress,
        )
        todo = [c for c in cells if not self.finished(c)]
        started = time.perf_counter()
        try:
            if self.executor is None:
                for model in self.config.models:
                    mine = [c for c in todo if c.model == model]
                    if mine:
                        self.run_model(model, mine, sets, bar)
            else:
                self.executor.run(self, fit_groups(todo), bar)
        except BaseException:  # interrupted or failed: the Parquet files show what finished
            consolidate(self.results)
            raise
        bar.close()
        cells_done = time.perf_counter()
        self.log_to_mlflow(tracker, cells)
        tracker.finish()
        n_generations, n_rows = consolidate(self.results)
        write_comparisons(self.results)
        bookkeeping = time.perf_counter() - cells_done
        log.info(
            "Bookkeeping (MLflow, Parquet, paired comparisons): %.1f s, %.1f %% of this run",
            bookkeeping,
            100 * bookkeeping / (time.perf_counter() - started),
        )
        return {
            "cells": len(cells),
            "ran": len(cells) - done_before,
            "generations": n_generations,
            "result_rows": n_rows,
        }

    def run_model(
        self, model: str, cells: list[Cell], sets: dict[str, list[PromptRecord]], bar
    ) -> None:
        from steerbench.method import FitContext, get_method
        from steerbench.model.adapter import ModelAdapter
        from steerbench.model.chat import PromptFormat
        from steerbench.model.loading import load_model

        lm = load_model(model, device=self.config.device, dtype=self.config.dtype)
        adapter = ModelAdapter.from_model(lm.model)
        for spec in {c.method.display: c.method for c in cells if c.method}.values():
            try:  # a layer the model does not have fails now, not after minutes of fitting
                get_method(spec.name, **spec.params).check_model(adapter)
            except SteerbenchError as err:
                raise SteerbenchError(f"method {spec.display!r} on {model}: {err}") from err
        ctx = FitContext(
            lm.model,
            lm.tokenizer,
            fmt=PromptFormat(**self.config.prompt_format),
            batch_size=fit_batch_size(self.config),
            model_name=lm.name,
            model_revision=lm.revision,
            progress=self.progress,
        )
        artifacts: dict[str, Any] = {}
        for cell in cells:
            start = time.perf_counter()
            artifact = None
            if cell.method is not None:
                key = fit_key(self.config, model, cell.method)
                if key not in artifacts:
                    artifacts[key] = self.fitted_artifact(ctx, cell.method, key)
                artifact = artifacts[key]
            self.run_cell(lm, cell, artifact, sets, start)
            if bar is not None:
                bar.update(1)

    def fitted_artifact(self, ctx, spec: MethodSpec, key: str):
        from steerbench.method import Artifact, get_method

        directory = self.results / "artifacts" / key
        if (directory / "artifact.json").is_file():
            log.info("Reusing %s artifact %s", spec.name, directory)
            return Artifact.load(directory)
        positive, negative = (
            [r.text for r in discovery_prompts(self.config, side)]
            for side in ("positive", "negative")
        )
        log.info(
            "Fitting %s on %d positive / %d negative prompts",
            spec.name,
            len(positive),
            len(negative),
        )
        start = time.perf_counter()
        artifact = get_method(spec.name, **spec.params).fit(ctx, positive, negative)
        artifact.metadata.update(
            discovery=self.config.discovery, fit_seconds=round(time.perf_counter() - start, 2)
        )
        artifact.save(directory)
        return artifact

    # -- one cell -----------------------------------------------------------------------

    def run_cell(
        self, lm, cell: Cell, artifact, sets: dict[str, list[PromptRecord]], start: float
    ) -> None:
        """Generate on every evaluation and validation set under steering, then score each
        metric as its phase says (``steerbench.metric.metric_calls``): model-level metrics
        (MMLU) inside the steering context, the others on the records after it."""
        from steerbench.method import get_method

        log.info("Cell %s", cell.label)
        metrics = self.metrics
        method = get_method(cell.method.name, **cell.method.params) if cell.method else None

        def steering():
            return method.steer(lm.model, artifact, cell.strength) if method else nullcontext()

        opener = steering if method else None  # what metrics that compare get: none unsteered
        prompt_sets = self.prompt_sets(sets)
        timer = PhaseTimer()
        generate = partial(generate_records, self.config, lm, prompt_sets, progress=self.progress)
        score = partial(score_metrics, metrics, lm=lm, steering=opener, timer=timer)
        splits = splits_of(self.part)
        with steering():
            records = timer("generation", generate)
            scored = score(records, under_steering=True, splits=splits)
        scored += score(records, under_steering=False, splits=splits)
        log.info("Cell %s: %s", cell.label, timer.summary())
        self.save(cell, records, scored, time.perf_counter() - start, lm)

    def prompt_sets(
        self, sets: dict[str, list[PromptRecord]]
    ) -> dict[tuple[str, str], list[PromptRecord]]:
        """A cell's prompts by (split, set name): its evaluation sets, then validation sets
        (of this runner's part only)."""
        splits = splits_of(self.part)
        prompt_sets = {}
        if SPLIT_EVALUATION in splits:
            prompt_sets = {(SPLIT_EVALUATION, name): prompts for name, prompts in sets.items()}
        if SPLIT_VALIDATION in splits:
            for name, prompts in validation_sets(self.config).items():
                prompt_sets[(SPLIT_VALIDATION, name)] = prompts
        return prompt_sets

    def save(
        self, cell: Cell, records: RecordSets, scored: list[Scored], seconds: float, lm
    ) -> None:
        """One cell's generations (with every metric's declared per-item columns) and its
        result rows, written atomically; no metric is named here."""
        run = CellRun(
            key=cell_key(self.config, cell),
            cell=cell,
            config_name=self.config.name,
            model_revision=lm.revision,
            seconds=seconds,
            seed=self.config.seed,
            batch_size=int(resolved_generation(self.config)["batch_size"]),
            machine=machine(lm),
            provenance=self.provenance,
        )
        generations, declared = generation_rows(run, records, scored)
        rows = result_rows(run, scored, self.config.role_of)
        directory = part_directory(run.key, self.part)
        save_cell(self.results, directory, generations, rows, cell_info(run), declared)
        log.info("Finished %s in %.0f s", cell.label, seconds)

    def log_to_mlflow(self, tracker, cells: list[Cell]) -> None:
        """One MLflow run per finished cell, or per part of one (``label [part]``)."""
        logged = tracker.logged_cells()
        for cell in cells:
            key = cell_key(self.config, cell)
            directory = part_directory(key, self.part)
            payload = finished_cell(self.results, directory)
            if payload is None:  # a whole cell holds the part
                directory, payload = key, finished_cell(self.results, key)
            if directory in logged or payload is None or not payload["rows"]:
                continue
            info = payload["info"]
            params = {
                "model": cell.model,
                "method": cell.method_label,
                "method_name": cell.method.name if cell.method else UNSTEERED,
                "strength": cell.strength,
                "hyperparameters": json.dumps(info["params"]),
                "discovery": json.dumps(self.config.discovery),
                "evaluation": json.dumps(self.config.evaluation),
                "seed": self.config.seed,
                "split_seed": self.config.split_seed,
                "cell_key": key,
                **self.provenance,
            }
            artifacts = [
                self.results / "cells" / directory / "generations.parquet",
                self.results / "config.resolved.yaml",
            ]
            if cell.method is not None:
                artifacts.append(
                    self.results / "artifacts" / fit_key(self.config, cell.model, cell.method)
                )
            name = info["label"] + (f" [{self.part}]" if directory != key else "")
            tracker.log_cell(directory, name, params, payload["rows"], artifacts)
