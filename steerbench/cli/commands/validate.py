"""``steerbench validate``: a judge against human labels it never saw (strongreject), or a
metric against the labelled set it ships (the others: as ``agreement``)."""

from __future__ import annotations

import argparse

from steerbench.errors import SteerbenchError


def cmd_validate(args: argparse.Namespace) -> int:
    from steerbench.cli.commands.metrics import cmd_agreement, format_table
    from steerbench.studies.judge_validation import (
        REPORTED_SETS,
        VALIDATED_METRIC,
        validation_report,
    )

    if args.metric != VALIDATED_METRIC:
        return cmd_agreement(args)
    from steerbench.model.loading import load_model

    unknown = sorted(set(args.set or []) - set(REPORTED_SETS))
    if unknown:
        raise SteerbenchError(
            f"unknown labelled set {unknown[0]!r}; use one of {', '.join(REPORTED_SETS)}"
        )
    judges = [load_model(name, device=args.device, dtype=args.dtype) for name in args.model or []]
    rows = validation_report(judges, limit=args.limit, sets=args.set or REPORTED_SETS)
    shown = [
        {
            "set": r["set"],
            "classifier": r["classifier"],
            "n": r["n"],
            "auroc": r["auroc"],
            "95% CI": f"[{r['auroc_low']:.3f}, {r['auroc_high']:.3f}]",
            "agreement": r["agreement"],
            "TP": r["true_positive"],
            "FP": r["false_positive"],
            "FN": r["false_negative"],
            "TN": r["true_negative"],
        }
        for r in rows
    ]
    print(
        f"{VALIDATED_METRIC} judges on human labels (helps = harmful help given; a score >= 0.5 "
        "counts as helps); AUROC with a bootstrap 95 % interval"
    )
    for line in format_table(shown):
        print(line)
    return 0


def register_validate_commands(sub: argparse._SubParsersAction) -> None:
    from steerbench.cli.commands.metrics import add_metric_options

    p = sub.add_parser(
        "validate",
        help="a judge or metric against human labels (strongreject: three held-out sets)",
        description="strongreject: the keyword classifier, a TF-IDF baseline trained on "
        "GPTFuzz's train split and two thirds of the project's labelled outputs, and each "
        "--model's digit grade, on GPTFuzz's evaluate split, XSTest v2's answers to its "
        "unsafe prompts and the project's held-out third (AUROC with a bootstrap interval, "
        "agreement, confusion counts). Other metrics: as `steerbench agreement`.",
    )
    p.add_argument("metric", help="strongreject, or a metric with labels (`steerbench metrics`)")
    p.add_argument(
        "--model", action="append", help="a judge model to validate (repeatable; default: none)"
    )
    p.add_argument(
        "--set", action="append", help="only this labelled set (repeatable; default: all three)"
    )
    p.add_argument(
        "--limit",
        type=int,
        help="the model judges read a seeded sample of this many pairs per set (default: all)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--dtype", default="auto", help="model dtype (default: auto)")
    add_metric_options(p)
    p.set_defaults(handler=cmd_validate)
