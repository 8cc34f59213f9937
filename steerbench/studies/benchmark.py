"""Run a benchmark config the way it says (``evaluate``): whole cells, or every strength on
the validation sets first and then the evaluation sets for only the strengths chosen there.

``evaluate: chosen`` is how AxBench and SteeringControl spend their compute: choosing a
strength needs only the task's metric and its constraints, measured on validation items
(a benign validation split for over-refusal, MMLU questions of its own), so every strength
costs a validation pass and the full evaluation (the reported sets and MMLU questions, the
judge, kl-benign) runs once per method and task. The choice is the leaderboard's own rule
(``steerbench.publish.verdicts.chosen_strengths``), so what the run evaluated is what the
leaderboard reports, and no reported number comes from an item that chose a strength.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from steerbench.errors import SteerbenchError
from steerbench.metric import SPLIT_VALIDATION
from steerbench.run.config import BenchmarkConfig
from steerbench.run.plan import Cell, plan
from steerbench.run.runner import Runner

log = logging.getLogger(__name__)


def check_choosable(config: BenchmarkConfig) -> None:
    """Every task's metric and constraints must be measured on validation items, or the
    sweep cannot choose: the error names what to add."""
    from steerbench.metric import get_metric

    validated = set(config.validation)
    built = {m.name: get_metric(m.name, **m.options) for m in config.metrics}
    for task in config.tasks:
        needs = [(task.metric, task.role)] + [(c.metric, c.role) for c in task.constraints]
        if not validated and any(role != "model" for _, role in needs):
            raise SteerbenchError(
                "evaluate: chosen needs validation sets to choose strengths on; add "
                "validation: or use evaluate: all"
            )
        for metric, role in needs:
            if role == "model":
                if metric in built and not built[metric].scores_split(SPLIT_VALIDATION):
                    raise SteerbenchError(
                        f"evaluate: chosen: task {task.name!r} constrains {metric!r}, which "
                        f"measures no validation items of its own; give it some (mmlu: "
                        f"validation_n) or use evaluate: all"
                    )
                continue
            sets = [s for s in config.evaluation if config.role_of(s) == role]
            missing = [s for s in sets if s not in validated]
            if missing:
                raise SteerbenchError(
                    f"evaluate: chosen: task {task.name!r} reads {metric!r} on {role} sets, "
                    f"but {missing[0]!r} has no validation set; add validation: "
                    f"{missing[0]}: <prompt set>:validation"
                )


def chosen_cells(config: BenchmarkConfig, results: Path, cells: list[Cell]) -> list[Cell]:
    """The cells the tasks choose from the validation sweep in ``results`` (each model's
    unsteered cell always: every comparison is against it)."""
    from steerbench.publish.sources import load_results
    from steerbench.publish.verdicts import chosen_strengths

    frame = load_results([results])
    frame = frame[frame["split"] == SPLIT_VALIDATION]
    picked = chosen_strengths(frame, config.tasks)
    return [c for c in cells if c.method is None or (c.model, c.method_label, c.strength) in picked]


def run_benchmark(config: BenchmarkConfig, results: Path, **runner_options: Any) -> dict[str, int]:
    """Run ``config`` into ``results`` (``runner_options``: the ``Runner``'s tracking URI,
    progress and executor); returns the run's counts. A config with behaviours runs each
    behaviour's config in turn, into ``<results>/<behaviour>/``, and sums the counts."""
    from steerbench.run.behaviour_tasks import behaviour_configs, behaviour_results

    if config.behaviours is None:
        return run_one(config, results, **runner_options)
    totals: dict[str, int] = {}
    for part in behaviour_configs(config):
        log.info("Behaviour %s (%s)", part.behaviour, behaviour_results(results, part))
        counts = run_one(part, behaviour_results(results, part), **runner_options)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def run_one(config: BenchmarkConfig, results: Path, **runner_options: Any) -> dict[str, int]:
    """One ordinary config (one behaviour's, or a config without behaviours)."""
    if config.evaluate == "all":
        return Runner(config, results, **runner_options).run()
    check_choosable(config)
    cells = plan(config)
    sweep = Runner(config, results, part="validation", **runner_options).run(cells)
    chosen = chosen_cells(config, results, cells)
    log.info(
        "Validation sweep done: %d cells; evaluating the %d chosen (unsteered included): %s",
        len(cells),
        len(chosen),
        ", ".join(c.label for c in chosen),
    )
    evaluated = Runner(config, results, part="evaluation", **runner_options).run(chosen)
    return {
        "cells": len(cells),
        "ran": sweep["ran"],
        "evaluated": len(chosen),
        "evaluated_now": evaluated["ran"],
        "generations": evaluated["generations"],
        "result_rows": evaluated["result_rows"],
    }
