"""``steerbench run --dry-run``: the grid, which cells are done, and what the rest costs.

The minutes are a hint from measured machines (``THROUGHPUT_HINT``), shown only for the
models and dtypes they were measured on; the token count holds everywhere.
"""

from __future__ import annotations

from pathlib import Path

from steerbench.run.cell_parts import part_finished
from steerbench.run.config import BenchmarkConfig
from steerbench.run.plan import (
    cell_key,
    evaluation_sets,
    plan,
    resolved_dtype,
    resolved_generation,
    validation_sets,
)

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


def describe_plan(config: BenchmarkConfig, results: Path) -> str:
    """The grid and a cost estimate, for ``--dry-run`` (per behaviour, for a config with
    behaviours)."""
    from steerbench.run.behaviour_tasks import behaviour_configs, behaviour_results

    if config.behaviours is not None:
        return "\n\n".join(
            describe_one(part, behaviour_results(results, part)) + "\n" + model_reads(part)
            for part in behaviour_configs(config)
        )
    return describe_one(config, results)


def model_reads(config: BenchmarkConfig) -> str:
    """The items model-level metrics read (one forward pass each: A/B items, MMLU
    questions) per validation pass and per evaluated cell."""
    from steerbench.metric import SPLIT_EVALUATION, SPLIT_VALIDATION, get_metric

    counts = dict.fromkeys((SPLIT_VALIDATION, SPLIT_EVALUATION), 0)
    for spec in config.metrics:
        metric = get_metric(spec.name, **spec.options)
        for split in counts:
            counts[split] += metric.items_read(split) or 0
    return (
        f"model-read items (one forward pass each): {counts[SPLIT_VALIDATION]} per validation "
        f"pass, {counts[SPLIT_EVALUATION]} per evaluated cell"
    )


def describe_one(config: BenchmarkConfig, results: Path) -> str:
    """One ordinary config's grid and cost."""
    cells = plan(config)
    sets, validation = evaluation_sets(config), validation_sets(config)
    lines = [f"benchmark {config.name!r}: {len(cells)} cells -> {results}"]
    todo = [c for c in cells if not part_finished(results, cell_key(config, c), None)]
    for cell in cells:
        swept = part_finished(results, cell_key(config, cell), "validation")
        status = "done" if cell not in todo else "swept" if swept else "todo"
        lines.append(f"  [{status}] {cell.label}")
    lines.append("evaluation sets: " + ", ".join(f"{k} ({len(v)})" for k, v in sets.items()))
    if validation:
        lines.append(
            "validation sets (choose strengths): "
            + ", ".join(f"{k} ({len(v)})" for k, v in validation.items())
        )
    lines.append(f"metrics: {', '.join(m.name for m in config.metrics)}")
    new_tokens = int(resolved_generation(config)["max_new_tokens"])
    n_evaluation = sum(map(len, sets.values()))
    n_validation = sum(map(len, validation.values()))
    if config.evaluate == "all":
        tokens = len(todo) * (n_evaluation + n_validation) * new_tokens  # cell_prompts
        lines.append(f"cost: {len(todo)} cells to run, about {tokens:,} generated tokens")
        return "\n".join(lines + generation_minutes(config, tokens))
    sweep = [c for c in cells if not part_finished(results, cell_key(config, c), "validation")]
    most = evaluated_at_most(config)
    tokens = (len(sweep) * n_validation + most * n_evaluation) * new_tokens
    lines.append(
        f"cost (evaluate: chosen): {len(sweep)} validation passes, then at most {most} cells "
        f"evaluated (each method's chosen strength per task, and the unsteered model): "
        f"at most {tokens:,} generated tokens"
    )
    return "\n".join(lines + generation_minutes(config, tokens))


def evaluated_at_most(config: BenchmarkConfig) -> int:
    """Cells a chosen-strengths run evaluates at most: per model the unsteered one and, per
    method, one strength per task (fewer where tasks agree or a method has fewer)."""
    cells = plan(config)
    tasks = max(len(config.tasks), 1)
    per_model = 1 + sum(
        min(tasks, sum(1 for c in cells if c.method == spec and c.model == config.models[0]))
        for spec in config.methods
    )
    return per_model * len(config.models)


def generation_minutes(config: BenchmarkConfig, tokens: int) -> list[str]:
    """Minutes of generation per model, where its throughput on this dtype was measured
    (on CPUs only: a GPU's speed is nothing like these); none when nothing is generated."""
    from steerbench.model.device import resolve_device

    if tokens == 0:
        return []
    dtype = resolved_dtype(config)
    hints = THROUGHPUT_HINT.get(dtype, {}) if resolve_device(config.device).type == "cpu" else {}
    return [
        f"  {model}: ~{tokens / len(config.models) / hints[model] / 60:.0f} min of generation "
        f"on 2 CPU cores in {dtype} (plus loading, fitting and the model-reading metrics)"
        for model in config.models
        if model in hints
    ]
