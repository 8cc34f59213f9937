"""The grid of a config: its cells, the prompts each cell generates for, and the keys that
name a cell's numbers and a fitted artifact (so reruns find what is already done)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from steerbench.method import UNSTEERED
from steerbench.run.config import BenchmarkConfig, MethodSpec
from steerbench.run.prompt_sets import PromptRecord, load_prompts, take_stratified


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
    def params(self) -> dict[str, Any]:
        """The method's hyper-parameters (none for the unsteered model)."""
        return self.method.params if self.method else {}

    @property
    def label(self) -> str:
        if self.method is None:
            return f"{self.model} / unsteered"
        return f"{self.model} / {self.method.display} @ {self.strength:g}"


def _hash(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _behaviour_keys(config: BenchmarkConfig) -> dict[str, Any]:
    """A behaviour's config adds its name and discovery draw to its keys, so cells and
    artifacts of different behaviours never share one (other configs' keys are unchanged)."""
    return {
        key: value
        for key, value in (
            ("behaviour", config.behaviour),
            ("discovery_limit", config.discovery_limit),
        )
        if value is not None
    }


def fit_key(config: BenchmarkConfig, model: str, method: MethodSpec) -> str:
    """Everything that determines a fitted artifact: also the rows read per batch, which in
    bf16 move activations by a rounding step (and can swap a neuron at the top-k edge)."""
    return _hash(
        {
            **_behaviour_keys(config),
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
    """Everything that determines a cell's numbers, and nothing else (not the device); the
    unsteered cell of a behaviour is that behaviour's (its tasks' reference)."""
    return _hash(
        {
            **_behaviour_keys(config),
            "model": cell.model,
            "dtype": resolved_dtype(config),
            "method": cell.method_label,
            "params": cell.params,
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
    """The generation settings a cell uses: the config's, over the runner's defaults."""
    from steerbench.model.generation import GenerationSettings

    return dataclasses.asdict(GenerationSettings(**{"seed": config.seed, **config.generation}))


def plan(config: BenchmarkConfig) -> list[Cell]:
    """Per model: the unsteered cell, then each method at each of its strengths."""
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


def discovery_prompts(config: BenchmarkConfig, side: str) -> list[PromptRecord]:
    """One side's discovery prompts: the set, or ``discovery_limit`` of them by a seeded
    draw that depends only on the set's size and categories, so the positive and negative
    sides of paired sets keep the same pairs."""
    records = load_prompts(config.discovery[side], split_seed=config.split_seed)
    limit = config.discovery_limit
    return take_stratified(records, limit, seed=config.split_seed) if limit else records


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
