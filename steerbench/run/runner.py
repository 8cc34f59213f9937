"""The benchmark runner: every (model, method, strength) cell of a config, resumably.

For each model: load once, fit each method once (artifacts cached on disk), then for the
unsteered baseline and each strength generate on every evaluation set in batches and
compute every metric. Each cell is keyed by a hash of everything that determines it and
saved atomically when finished (see ``steerbench.run.results``), so reruns skip finished cells.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from steerbench import __version__
from steerbench.errors import SteerbenchError
from steerbench.files import atomic_write_text
from steerbench.metric import MODEL_LEVEL
from steerbench.run.config import BenchmarkConfig, MethodSpec
from steerbench.run.prompt_sets import PromptRecord, load_prompts, take_stratified
from steerbench.run.results import (
    consolidate,
    finished_cells,
    is_finished,
    results_lock,
    save_cell,
)
from steerbench.stats.comparisons import write_comparisons

log = logging.getLogger(__name__)

UNSTEERED = "none"
# For --dry-run estimates only: token budget (prompts x max_new_tokens) generated per second
# on 2 CPU cores with continuous batching (answers that end early make it higher than the
# decoding speed), by the dtype the run computes in, from the runner's per-cell log: bf16
# on an Intel CPU with avx512_bf16 (default run, 1.5B, 64 rows; `steerbench run scaling`,
# 0.5B, 32 rows), float32 on an AMD EPYC with AVX2 only (an unsteered default cell, 1.5B;
# `steerbench run --quick`, 0.5B).
THROUGHPUT_HINT = {
    "bfloat16": {"qwen2.5-coder-1.5b-instruct": 86.0, "qwen2.5-coder-0.5b-instruct": 157.0},
    "float32": {"qwen2.5-coder-1.5b-instruct": 19.0, "qwen2.5-coder-0.5b-instruct": 42.0},
}


@dataclass(frozen=True)
class Cell:
    model: str
    method: MethodSpec | None  # None: the unsteered baseline
    strength: float | None

    @property
    def method_label(self) -> str:
        """The method's display label ("none" for the unsteered model: the stored value)."""
        return self.method.display if self.method else UNSTEERED

    @property
    def label(self) -> str:
        if self.method is None:
            return f"{self.model} / unsteered"
        return f"{self.model} / {self.method.display} @ {self.strength:g}"


def _hash(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fit_key(config: BenchmarkConfig, model: str, method: MethodSpec) -> str:
    """Everything that determines a fitted artifact: also the rows read per batch, which in
    bf16 move activations by a rounding step (and can swap a neuron at the top-k edge)."""
    return _hash(
        {
            "model": model,
            "dtype": resolved_dtype(config),
            "method": method.name,
            "params": method.params,
            "discovery": config.discovery,
            "split_seed": config.split_seed,
            "prompt_format": config.prompt_format,
            "batch_size": fit_batch_size(config),
        }
    )


def resolved_dtype(config: BenchmarkConfig) -> str:
    """The dtype the run computes in: ``auto`` resolved for this machine (bf16 where the
    CPU has bf16 instructions, float32 elsewhere), so cells of machines that compute in
    different dtypes (different greedy answers) never pass for each other."""
    from steerbench.model.device import resolve_device, resolve_dtype

    return str(resolve_dtype(config.dtype, resolve_device(config.device))).removeprefix("torch.")


def fit_batch_size(config: BenchmarkConfig) -> int:
    """Discovery reads prompts in batches of the generation's rows."""
    return int(resolved_generation(config)["batch_size"])


def cell_key(config: BenchmarkConfig, cell: Cell) -> str:
    """Everything that determines a cell's numbers, and nothing else (not the device)."""
    return _hash(
        {
            "model": cell.model,
            "dtype": resolved_dtype(config),
            "method": cell.method_label,
            "params": cell.method.params if cell.method else {},
            "strength": cell.strength,
            "discovery": config.discovery if cell.method else None,
            "evaluation": config.evaluation,
            "evaluation_limit": config.evaluation_limit,
            "validation": config.validation,
            "roles": config.roles,
            "metrics": [dataclasses.asdict(m) for m in config.metrics],
            # resolved, so the batch size counts also when left at its default: in bf16 it
            # changes some greedy answers (see steerbench.model.generation)
            "generation": resolved_generation(config),
            "prompt_format": config.prompt_format,
            "seed": config.seed,
            "split_seed": config.split_seed,
        }
    )


def resolved_generation(config: BenchmarkConfig) -> dict[str, Any]:
    from steerbench.model.generation import GenerationSettings

    return dataclasses.asdict(GenerationSettings(**{"seed": config.seed, **config.generation}))


def plan(config: BenchmarkConfig) -> list[Cell]:
    from steerbench.method import METHODS

    cells = []
    for model in config.models:
        cells.append(Cell(model, None, None))
        for spec in config.methods:
            strengths = spec.strengths or list(METHODS.get(spec.name).default_strengths)
            cells += [Cell(model, spec, float(s)) for s in strengths]
    return cells


def fit_groups(cells: list[Cell]) -> list[list[Cell]]:
    """Cells that share a model and a fitted method (the unit of work on a cluster)."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model, cell.method_label), []).append(cell)
    return list(groups.values())


SPLIT_EVALUATION = "evaluation"
SPLIT_VALIDATION = "validation"


def _records(config: BenchmarkConfig, name: str, spec: str) -> list[PromptRecord]:
    records = load_prompts(spec, split_seed=config.split_seed)
    limit = config.limit_for(name)
    return take_stratified(records, limit, seed=config.split_seed) if limit else records


def evaluation_sets(config: BenchmarkConfig) -> dict[str, list[PromptRecord]]:
    return {name: _records(config, name, spec) for name, spec in config.evaluation.items()}


def validation_sets(config: BenchmarkConfig) -> dict[str, list[PromptRecord]]:
    """Prompts that choose each method's strength (never reported as results)."""
    return {name: _records(config, name, spec) for name, spec in config.validation.items()}


def cell_prompts(config: BenchmarkConfig) -> list[PromptRecord]:
    """Every prompt one cell generates for (its evaluation sets, then its validation sets):
    the generation workload ``steerbench bench`` times."""
    sets = [*evaluation_sets(config).values(), *validation_sets(config).values()]
    return [record for records in sets for record in records]


def describe_plan(config: BenchmarkConfig, results: Path) -> str:
    """The grid and a cost estimate, for ``--dry-run``."""
    from steerbench.model.device import resolve_device

    cells = plan(config)
    sets, validation = evaluation_sets(config), validation_sets(config)
    max_new = int(resolved_generation(config)["max_new_tokens"])
    lines = [f"benchmark {config.name!r}: {len(cells)} cells -> {results}"]
    todo = [c for c in cells if not is_finished(results, cell_key(config, c))]
    for cell in cells:
        lines.append(f"  [{'todo' if cell in todo else 'done'}] {cell.label}")
    lines.append("evaluation sets: " + ", ".join(f"{k} ({len(v)})" for k, v in sets.items()))
    if validation:
        lines.append(
            "validation sets (choose strengths): "
            + ", ".join(f"{k} ({len(v)})" for k, v in validation.items())
        )
    lines.append(f"metrics: {', '.join(m.name for m in config.metrics)}")
    n_prompts = sum(len(v) for v in [*sets.values(), *validation.values()])  # cell_prompts
    tokens = len(todo) * n_prompts * max_new
    lines.append(f"cost: {len(todo)} cells to run, about {tokens:,} generated tokens")
    dtype = resolved_dtype(config)
    hints = THROUGHPUT_HINT.get(dtype, {}) if resolve_device(config.device).type == "cpu" else {}
    for model in config.models:
        if model in hints:
            minutes = tokens / len(config.models) / hints[model] / 60
            lines.append(
                f"  {model}: ~{minutes:.0f} min of generation on 2 CPU cores in {dtype} "
                f"(plus loading, fitting and the model-reading metrics)"
            )
    return "\n".join(lines)


def git_commit() -> str | None:
    """The steerbench source commit (editable installs), "+dirty" when it has local edits."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=here, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def provenance() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "steerbench_version": __version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "git_commit": git_commit(),
    }


def check_writable(results: Path) -> None:
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SteerbenchError(
            f"results directory {results} is not writable ({err.strerror}); choose another "
            f"with --results DIR"
        ) from err


def model_level_rows(split: str, result) -> list[dict]:
    """A model-level metric's items (``extra["items"]``: dicts with an ``id``, MMLU's
    questions) as generation rows of set "*", so cells can be compared on them question by
    question; the row's response is the item's ``predicted`` answer."""
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
    ) -> None:
        self.config = config
        self.results = results
        self.tracking_uri = tracking_uri
        self.progress = progress
        self.executor = (
            executor  # None: this process; else e.g. steerbench.run.executors.RayExecutor
        )
        self.provenance = provenance()

    # -- setup ------------------------------------------------------------------------

    def write_run_files(
        self, sets: dict[str, list[PromptRecord]], validation: dict[str, list[PromptRecord]]
    ) -> None:
        atomic_write_text(
            self.results / "config.resolved.yaml",
            yaml.safe_dump(self.config.to_dict(), sort_keys=False),
        )
        discovery = {
            k: [r.id for r in load_prompts(v, split_seed=self.config.split_seed)]
            for k, v in self.config.discovery.items()
        }
        splits = {
            "split_seed": self.config.split_seed,
            "discovery": discovery,
            "validation": {k: [r.id for r in v] for k, v in validation.items()},
            "evaluation": {k: [r.id for r in v] for k, v in sets.items()},
        }
        atomic_write_text(self.results / "splits.json", json.dumps(splits, indent=1))

    # -- the grid ---------------------------------------------------------------------

    def run(self) -> dict[str, int]:
        check_writable(self.results)
        with results_lock(self.results):
            self.preflight()
            return self._run_locked()

    def preflight(self) -> None:
        """What can be checked without loading weights, before any work: the device exists,
        every model can be found and every metric's own preflight (a remote judge answers)
        passes."""
        from steerbench.metric import get_metric
        from steerbench.model.device import resolve_device
        from steerbench.model.loading import check_model_spec

        if self.executor is None:  # a cluster's devices are its nodes' business
            resolve_device(self.config.device)
        for model in self.config.models:
            check_model_spec(model)
        for spec in self.config.metrics:
            try:
                get_metric(spec.name, **spec.options).preflight()
            except SteerbenchError as err:
                raise SteerbenchError(f"metric {spec.name!r}: {err}") from err

    def _run_locked(self) -> dict[str, int]:
        from steerbench.run.tracking import Tracker

        sets = evaluation_sets(self.config)
        self.write_run_files(sets, validation_sets(self.config))
        cells = plan(self.config)
        tracker = Tracker(self.results, self.tracking_uri, self.config.name, self.config.to_dict())
        done_before = sum(is_finished(self.results, cell_key(self.config, c)) for c in cells)
        if done_before:
            log.info("Resuming: %d of %d cells already finished", done_before, len(cells))
        bar = tqdm(
            total=len(cells),
            initial=done_before,
            desc="cells",
            unit="cell",
            disable=not self.progress,
        )
        todo = [c for c in cells if not is_finished(self.results, cell_key(self.config, c))]
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
        positive = [
            r.text
            for r in load_prompts(
                self.config.discovery["positive"], split_seed=self.config.split_seed
            )
        ]
        negative = [
            r.text
            for r in load_prompts(
                self.config.discovery["negative"], split_seed=self.config.split_seed
            )
        ]
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

    def run_cell(
        self, lm, cell: Cell, artifact, sets: dict[str, list[PromptRecord]], start: float
    ) -> None:
        """Generate on every evaluation and validation set under steering, then score.

        Metrics that measure the steered model (MMLU) run inside the steering context;
        metrics given the means to steer (``uses_steering``) get a callable that opens it;
        the others (keyword refusal, quality, a local judge) score the records unsteered.
        Validation sets only get the metrics that need no model: they choose strengths."""
        from steerbench.method import get_method
        from steerbench.metric import Record, get_metric
        from steerbench.model.chat import PromptFormat
        from steerbench.model.generation import GenerationSettings, generate

        log.info("Cell %s", cell.label)
        config = self.config
        settings = GenerationSettings(**{"seed": config.seed, **config.generation})
        fmt = PromptFormat(**config.prompt_format)
        metrics = [
            (spec, get_metric(spec.name, **{"seed": config.seed, **spec.options}))
            for spec in config.metrics
        ]
        method = get_method(cell.method.name, **cell.method.params) if cell.method else None

        def steering():
            return method.steer(lm.model, artifact, cell.strength) if method else nullcontext()

        prompt_sets = {(SPLIT_EVALUATION, name): prompts for name, prompts in sets.items()}
        for name, prompts in validation_sets(config).items():
            prompt_sets[(SPLIT_VALIDATION, name)] = prompts
        records: dict[tuple[str, str], list[Record]] = {}
        results = []  # (split, eval_set, MetricResult)
        phases: dict[str, float] = {}  # seconds per phase, logged: where a cell's time goes

        def timed(phase: str, fn: Callable[[], Any]) -> Any:
            begin = time.perf_counter()
            try:
                return fn()
            finally:
                phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - begin

        with steering():
            # every set in one call: continuous batching keeps its rows full across sets
            everything = [p for prompts in prompt_sets.values() for p in prompts]
            responses = iter(
                timed(
                    "generation",
                    partial(
                        generate,
                        lm.model,
                        lm.tokenizer,
                        [p.text for p in everything],
                        settings,
                        fmt,
                        progress=self.progress,
                    ),
                )
            )
            for where, prompts in prompt_sets.items():
                records[where] = [
                    Record(p.id, p.text, next(responses), p.category) for p in prompts
                ]
            for spec, metric in metrics:
                if metric.measures_steered_model:
                    result = timed(spec.name, partial(metric.compute, [], lm=lm))
                    results.append((SPLIT_EVALUATION, MODEL_LEVEL, result))
        for spec, metric in metrics:  # unsteered from here on (e.g. a local judge)
            if metric.measures_steered_model:
                continue
            for split, name in records:
                if (spec.sets and name not in spec.sets) or (
                    split == SPLIT_VALIDATION and (metric.needs_model or metric.uses_steering)
                ):
                    continue
                extra = {"steering": steering if method else None} if metric.uses_steering else {}
                given = records[(split, name)]
                result = timed(spec.name, partial(metric.compute, given, lm=lm, **extra))
                results.append((split, name, result))
        log.info(
            "Cell %s: %s",
            cell.label,
            ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in phases.items()),
        )
        self.save(cell, records, results, time.perf_counter() - start, lm)

    def save(self, cell: Cell, records, results, seconds: float, lm) -> None:
        """One cell's generations (with every metric's declared per-item columns) and
        its result rows, written atomically; no metric is named here."""
        from steerbench.metric import METRICS
        from steerbench.run.results import SCHEMA_VERSION

        key = cell_key(self.config, cell)
        per_item: dict[tuple[str, str], dict[str, list]] = {}
        declared: dict[str, str] = {}
        model_items: list[dict] = []
        for split, name, result in results:
            if name == MODEL_LEVEL:  # model-level metrics (MMLU): their items, when they list them
                model_items += model_level_rows(split, result)
                if result.extra.get("items"):
                    declared[result.metric] = "float"
                continue
            declared.update(METRICS.get(result.metric).declared_columns())
            per_item.setdefault((split, name), {}).update(result.item_table())
        generations = []
        for (split, name), items in records.items():
            columns = per_item.get((split, name), {})
            for i, record in enumerate(items):
                row = {
                    "schema_version": SCHEMA_VERSION,
                    "cell_key": key,
                    "model": cell.model,
                    "method": cell.method_label,
                    "strength": cell.strength,
                    "split": split,
                    "eval_set": name,
                    "prompt_id": record.id,
                    "category": record.category,
                    "prompt": record.prompt,
                    "response": record.response,
                }
                row.update({column: values[i] for column, values in columns.items()})
                generations.append(row)
        for item in model_items:
            generations.append(
                {
                    "schema_version": SCHEMA_VERSION,
                    "cell_key": key,
                    "model": cell.model,
                    "method": cell.method_label,
                    "strength": cell.strength,
                    **item,
                }
            )
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rows = []
        for split, name, result in results:
            extra = {k: v for k, v in result.extra.items() if k not in ("items", "judgements")}
            rows.append(
                {
                    "schema_version": SCHEMA_VERSION,
                    "cell_key": key,
                    "config_name": self.config.name,
                    "model": cell.model,
                    "model_revision": lm.revision,
                    "method": cell.method_label,
                    "method_name": cell.method.name if cell.method else UNSTEERED,
                    "method_params": json.dumps(
                        cell.method.params if cell.method else {}, sort_keys=True
                    ),
                    "strength": cell.strength,
                    "is_unsteered": cell.method is None,
                    "split": split,
                    "eval_set": name,
                    "role": self.config.role_of(name),
                    "metric": result.metric,
                    "value": _finite(result.aggregate),
                    "ci_low": _finite(result.ci_low),
                    "ci_high": _finite(result.ci_high),
                    "n": result.n,
                    "n_missing": result.n_missing,
                    "extra": json.dumps(extra, sort_keys=True, default=str),
                    "seconds": round(seconds, 2),
                    "device": str(lm.device),
                    "dtype": str(next(lm.model.parameters()).dtype).removeprefix("torch."),
                    "seed": self.config.seed,
                    "batch_size": int(resolved_generation(self.config)["batch_size"]),
                    "created": created,
                    **self.provenance,
                }
            )
        info = {
            "label": cell.label,
            "model": cell.model,
            "method": cell.method_label,
            "params": cell.method.params if cell.method else {},
            "strength": cell.strength,
            "seconds": round(seconds, 2),
        }
        save_cell(self.results, key, generations, rows, info, declared)
        log.info("Finished %s in %.0f s", cell.label, seconds)

    def log_to_mlflow(self, tracker, cells: list[Cell]) -> None:
        logged = tracker.logged_cells()
        by_key = {c["rows"][0]["cell_key"]: c for c in finished_cells(self.results) if c["rows"]}
        for cell in cells:
            key = cell_key(self.config, cell)
            if key in logged or key not in by_key:
                continue
            info = by_key[key]["info"]
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
                self.results / "cells" / key / "generations.parquet",
                self.results / "config.resolved.yaml",
            ]
            if cell.method is not None:
                artifacts.append(
                    self.results / "artifacts" / fit_key(self.config, cell.model, cell.method)
                )
            tracker.log_cell(key, info["label"], params, by_key[key]["rows"], artifacts)


def _finite(value: float) -> float | None:
    return None if value is None or value != value else float(value)
