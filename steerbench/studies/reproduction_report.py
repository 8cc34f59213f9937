"""REPRODUCTION.md from the facts ``steerbench reproduce`` measured.

Rendering is kept apart from running, so the report can be rebuilt (and checked) from a
``facts.json`` without a model; the same facts always give the same bytes.
"""

from __future__ import annotations

from typing import Any

from steerbench.publish.markdown import md_cell
from steerbench.run.config import BenchmarkConfig
from steerbench.studies.claims import claims, pct


def _ci(row: Any) -> str:
    low, high = pct(row["refusal_ci_low"]), pct(row["refusal_ci_high"])
    return f"{pct(row['refusal'])} [{low}, {high}]"


def grid_row(row: Any, over_refusal: str) -> dict[str, str]:
    """One line of the steering-results table, formatted once for the report and
    facts.json alike (``over_refusal``: the column holding the over-refusal rate)."""
    return {
        "method": md_cell(row["method"]),
        "strength": "–" if row["is_unsteered"] else f"{row['strength']:g}",
        "refusal": _ci(row),
        "over_refusal": pct(row.get(over_refusal)),
        "quality": "–" if row["quality"] is None else f"{row['quality']:.3f}",
        "mmlu": pct(row["mmlu"]),
        "mmlu_delta": "–" if row["mmlu_delta"] is None else f"{100 * row['mmlu_delta']:+.1f} pt",
        "strongreject": "–" if row.get("strongreject") is None else f"{row['strongreject']:.2f}",
    }


def judge_description(config: BenchmarkConfig) -> str:
    """Who graded StrongREJECT: the report says how far to trust the judge's scores."""
    spec = next((m for m in config.metrics if m.name == "strongreject"), None)
    if spec is None:
        return "nobody (metric not configured)"
    if spec.options.get("judge_url"):
        return f"`{spec.options.get('judge_model')}` at {spec.options['judge_url']}"
    judge = spec.options.get("local_judge") or "the evaluated model itself"
    if spec.options.get("mode") == "trained":
        return f"the trained judge ({judge}'s read and a head fitted on human labels)"
    return f"{judge} running locally (a weak judge)"


def render(model: str, config: BenchmarkConfig, facts: dict[str, Any]) -> str:
    """REPRODUCTION.md from its template; every sentence is chosen by the numbers."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("steerbench.studies", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = pct
    return env.get_template("REPRODUCTION.md.j2").render(
        model=md_cell(model),
        config=config,
        judge=judge_description(config),
        f=facts,
        claims=claims(facts),
        circuit=next(iter(facts["layers"].values())),
    )
