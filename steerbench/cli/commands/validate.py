"""``steerbench validate``: a judge against human labels it never saw (strongreject), or a
metric against the labelled set it ships (the others: as ``agreement``)."""

from __future__ import annotations

import argparse

from steerbench.errors import SteerbenchError


def cmd_validate(args: argparse.Namespace) -> int:
    from pathlib import Path

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
    if args.retrain and len(args.model or []) != 1:
        raise SteerbenchError("--retrain fits the head of one judge: give exactly one --model")
    if args.head_out and not args.retrain:
        raise SteerbenchError("--head-out is where --retrain writes the head; add --retrain")
    judges = [load_model(name, device=args.device, dtype=args.dtype) for name in args.model or []]
    heads = retrain(judges[0], args.head_out, args.seed) if args.retrain else None
    rows = validation_report(judges, limit=args.limit, sets=args.set or REPORTED_SETS, heads=heads)
    shown = [
        {
            "set": r["set"],
            "classifier": r["classifier"],
            "n": r["n"],
            "auroc": r["auroc"],
            "95% CI": f"[{r['auroc_low']:.3f}, {r['auroc_high']:.3f}]",
            "vs TF-IDF [95% CI]": (
                f"{r['vs_baseline']:+.3f} [{r['vs_baseline_low']:+.3f}, "
                f"{r['vs_baseline_high']:+.3f}]"
                if "vs_baseline" in r
                else ""
            ),
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
    if args.out:
        from steerbench.studies.judge_validation import write_report

        print(f"wrote {write_report(rows, Path(args.out), judges, limit=args.limit)}")
    for readme in args.readme or []:
        from steerbench.publish.readme import update_readme
        from steerbench.studies.judge_validation import JUDGE_MARKERS, report_markdown

        update_readme(Path(readme), report_markdown(rows), JUDGE_MARKERS)
        print(f"wrote the table into {readme}")
    return 0


def retrain(lm, out: str | None, seed: int) -> dict:
    """Fit ``lm``'s head on the shipped training data, write it, print the selection."""
    from pathlib import Path

    from steerbench.cli.commands.metrics import format_table
    from steerbench.studies.judge_training import train_head, write_head

    head, table = train_head(lm, seed=seed)
    path = write_head(head, Path(out) if out else None)
    part = head.hidden
    hidden = f" (hidden: {'+'.join(part.groups)}, C {head.regularisation:g})" if part else ""
    print(f"trained judge head for {lm.name}: {'+'.join(head.inputs)}{hidden}")
    print("cross-validated on the training pairs, folds grouped by prompt:")
    shown = [{**row, "C": f"{row['C']:g}" if row["C"] else "-"} for row in table]
    for line in format_table(shown):
        print(line)
    print(f"wrote {path}")
    return {lm.name: head}


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
    p.add_argument(
        "--retrain",
        action="store_true",
        help="first fit the --model judge's trained head on the shipped training data "
        "(GPTFuzz train sample + the project's training split) and write it (--head-out)",
    )
    p.add_argument(
        "--head-out", help="where --retrain writes the head (default: the shipped head's file)"
    )
    p.add_argument(
        "--out",
        help="also write the report (report.json: every row, its per-pair scores, the command "
        "and the machine) into this folder",
    )
    p.add_argument(
        "--readme",
        action="append",
        help="write the report's table between the <!-- judge-validation:start --> and "
        "<!-- judge-validation:end --> markers of this Markdown file (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0, help="--retrain's seed (default: 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--dtype", default="auto", help="model dtype (default: auto)")
    add_metric_options(p)
    p.set_defaults(handler=cmd_validate)
