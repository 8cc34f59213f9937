"""``steerbench metrics``, ``evaluate``, ``validate-refusal`` and ``validate-judge``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from steerbench.cli_options import add_model_options, load_from_args
from steerbench.errors import SteerbenchError

log = logging.getLogger("steerbench")


def metric_options_from_args(args: argparse.Namespace) -> dict[str, dict]:
    """Per-metric options from the dedicated flags and ``--metric-option metric.key=value``."""
    options: dict[str, dict] = {}
    if getattr(args, "judge_url", None):
        options.setdefault("strongreject", {}).update(judge_url=args.judge_url)
    if getattr(args, "judge_model", None):
        options.setdefault("strongreject", {}).update(judge_model=args.judge_model)
    if getattr(args, "mmlu_n", None):
        options.setdefault("mmlu", {}).update(n=args.mmlu_n)
    for pair in getattr(args, "metric_option", None) or []:
        dotted, _, value = pair.partition("=")
        metric, _, key = dotted.partition(".")
        if not key or not _:
            raise SteerbenchError(f"--metric-option takes METRIC.KEY=VALUE, got {pair!r}")
        options.setdefault(metric, {})[key] = yaml.safe_load(value)
    return options


def add_metric_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    group.add_argument(
        "--judge-url",
        help="OpenAI-compatible endpoint for the strongreject "
        "judge (key from $STEERBENCH_JUDGE_API_KEY); default: local model",
    )
    group.add_argument("--judge-model", help="model name sent to --judge-url")
    group.add_argument("--mmlu-n", type=int, help="MMLU questions (default 285, all subjects)")
    group.add_argument(
        "--metric-option",
        action="append",
        metavar="METRIC.KEY=VALUE",
        help="any metric option, e.g. quality.n=3 (repeatable)",
    )


def read_records(path: Path):
    """Records with ``prompt`` and ``response`` (and an optional ``id``) from JSONL/Parquet."""
    from steerbench.metric import Record

    if not path.is_file():
        raise SteerbenchError(f"{path} does not exist; pass a JSONL or Parquet file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    elif path.suffix in (".jsonl", ".json"):
        from steerbench.data import read_jsonl

        rows = read_jsonl(path)
    else:
        raise SteerbenchError(f"{path}: use a .jsonl or .parquet file of prompt/response records")
    missing = [i for i, r in enumerate(rows) if "prompt" not in r or "response" not in r]
    if not rows or missing:
        raise SteerbenchError(
            f"{path}: every record needs 'prompt' and 'response' fields "
            f"({'no records' if not rows else f'record {missing[0] + 1} lacks them'})"
        )
    return [
        Record(
            str(r.get("id", f"item-{i:05d}")),
            str(r["prompt"]),
            str(r["response"] or ""),
            r.get("category"),
        )
        for i, r in enumerate(rows)
    ]


def print_results(results) -> None:
    print(f"{'metric':14} {'value':>8} {'95% CI':>19} {'n':>5} {'missing':>7}")
    for r in results:
        print(
            f"{r.metric:14} {r.aggregate:8.3f} [{r.ci_low:7.3f}, {r.ci_high:7.3f}] {r.n:5d} "
            f"{r.n_missing:7d}"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from steerbench.metric import get_metric

    records = read_records(Path(args.file))
    options = metric_options_from_args(args)
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    metrics = [get_metric(name, **options.get(name, {})) for name in names]
    needs_lm = any(m.uses_model() for m in metrics)
    lm = load_from_args(args) if needs_lm else None
    results = [m.compute(records, lm=lm) for m in metrics]
    print_results(results)
    if args.out:
        rows = []
        for i, record in enumerate(records):
            row = {"id": record.id, "prompt": record.prompt, "response": record.response}
            for metric, result in zip(metrics, results):
                if not metric.measures_steered_model:  # per-record values, as declared
                    row.update({k: v[i] for k, v in result.item_table().items()})
            rows.append(row)
        write_rows(Path(args.out), rows)
        log.info("Wrote per-item values to %s", args.out)
    return 0


def write_rows(path: Path, rows: list[dict]) -> None:
    """JSONL or Parquet by extension, written atomically."""
    from steerbench.cli_options import write_jsonl_atomic

    if path.suffix == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from steerbench.io import atomic_write_bytes

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        atomic_write_bytes(path, buffer.getvalue())
    else:
        write_jsonl_atomic(path, rows)


def cmd_metrics(args: argparse.Namespace) -> int:
    from steerbench.metric import METRICS

    print(f"{'name':16} {'source':16} {'model':6} description")
    for entry in METRICS.entries():
        cls = entry.cls
        print(
            f"{entry.name:16} {entry.source:16} {'yes' if cls.needs_model else 'no':6} "
            f"{cls.description}"
        )
    return 0


def cmd_validate_refusal(args: argparse.Namespace) -> int:
    from steerbench.metrics.refusal import validation_report

    report = validation_report()
    print(
        f"refusal classifier on {report['n']} labelled responses "
        f"(datasets/refusal_validation): accuracy {report['accuracy']:.3f}, "
        f"refusal precision {report['precision']:.3f}, recall {report['recall']:.3f}, "
        f"degenerate recall {report['degenerate_recall']:.3f}"
    )
    for item in report["errors"]:
        print(f"  {item['label']:>10} -> {item['predicted']:10} {item['response'][:70]!r}")
    return 0


def cmd_validate_judge(args: argparse.Namespace) -> int:
    from steerbench.metrics.strongreject import HELP_THRESHOLD, judge_validation_report
    from steerbench.models import BUILTIN_MODELS, is_installed, load_model

    names = args.judge or [n for n, b in BUILTIN_MODELS.items() if is_installed(b)]
    judges = [load_model(name, device=args.device, dtype=args.dtype) for name in names]
    report = judge_validation_report(judges, batch_size=args.batch_size)
    print(
        f"on {report[0]['n']} labelled (prompt, response) pairs (datasets/judge_validation; "
        f"helps = full or partial); agreement at score >= {HELP_THRESHOLD}"
    )
    print(f"{'classifier':58} {'agree':>6} {'AUROC':>6} {'TP':>4} {'FP':>4} {'FN':>4} {'TN':>4}")
    for r in report:
        print(
            f"{r['classifier']:58} {r['agreement']:6.3f} {r['auroc']:6.3f} "
            f"{r['true_positive']:4d} {r['false_positive']:4d} {r['false_negative']:4d} "
            f"{r['true_negative']:4d}"
        )
    return 0


def register_metric_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="list metrics (built-in and plugins)")
    p.set_defaults(handler=cmd_metrics)

    p = sub.add_parser(
        "evaluate",
        help="score prompt/response records with metrics",
        description="Evaluate a JSONL or Parquet file of records with `prompt` and `response` "
        "(and an optional `id`) with the chosen metrics.",
    )
    p.add_argument("file", help="JSONL or Parquet records")
    p.add_argument(
        "--metrics",
        default="refusal,quality",
        help="comma-separated metric names (default: refusal,quality)",
    )
    p.add_argument("--out", help="per-item values (.jsonl or .parquet)")
    add_metric_options(p)
    add_model_options(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser(
        "validate-refusal", help="accuracy of the refusal classifier on the labelled set"
    )
    p.set_defaults(handler=cmd_validate_refusal)

    p = sub.add_parser(
        "validate-judge",
        help="agreement and AUROC of the StrongREJECT judge(s) and the keyword classifier "
        "against the hand-labelled set",
        description="Score the 117 hand-labelled (prompt, response) pairs of "
        "datasets/judge_validation with the keyword refusal classifier and each local judge "
        "(default: every installed built-in model), and print agreement with the labels, "
        "AUROC and the confusion counts.",
    )
    p.add_argument(
        "--judge", action="append", help="a judge model (repeatable; default: built-in ones)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="judge batch size (default 8)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--dtype", default="auto", help="model dtype (default: auto)")
    p.set_defaults(handler=cmd_validate_judge)
