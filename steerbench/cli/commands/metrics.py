"""``steerbench metrics``, ``evaluate`` and ``agreement``: commands that only know the
metric interface (options, declared columns, the labelled set a metric ships)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import yaml

from steerbench.cli.options import add_model_options, add_steering_options, load_from_args
from steerbench.errors import SteerbenchError

log = logging.getLogger("steerbench")


def metric_options_from_args(args: argparse.Namespace) -> dict[str, dict]:
    """Per-metric options from ``--metric-option METRIC.KEY=VALUE`` (values read as YAML)."""
    options: dict[str, dict] = {}
    for pair in getattr(args, "metric_option", None) or []:
        dotted, _, value = pair.partition("=")
        metric, _, key = dotted.partition(".")
        if not key or not _:
            raise SteerbenchError(f"--metric-option takes METRIC.KEY=VALUE, got {pair!r}")
        options.setdefault(metric, {})[key] = yaml.safe_load(value)
    return options


def add_metric_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metric-option",
        action="append",
        metavar="METRIC.KEY=VALUE",
        help="any option a metric declares, e.g. quality.n=3, mmlu.n=57 or "
        "strongreject.judge_url=http://host/v1 (repeatable; `steerbench metrics` lists them)",
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
        from steerbench.run.prompt_sets import read_jsonl

        try:
            rows = read_jsonl(path)
        except RecursionError:
            raise SteerbenchError(f"{path}: a record is nested too deeply to be JSON") from None
    else:
        raise SteerbenchError(f"{path}: use a .jsonl or .parquet file of prompt/response records")
    missing = [i for i, r in enumerate(rows) if "prompt" not in r or "response" not in r]
    if not rows or missing:
        raise SteerbenchError(
            f"{path}: every record needs 'prompt' and 'response' fields "
            f"({'no records' if not rows else f'record {missing[0] + 1} lacks them'})"
        )
    for i, r in enumerate(rows):
        for field, allowed in (("prompt", (str,)), ("response", (str, type(None)))):
            if not isinstance(r[field], allowed):
                raise SteerbenchError(
                    f"{path}: record {i + 1}'s {field!r} is a {type(r[field]).__name__}, not "
                    f"text; every prompt and response must be a string"
                )
        if r.get("id") is not None and not isinstance(r["id"], (str, int)):
            raise SteerbenchError(f"{path}: record {i + 1}'s 'id' must be a string or a number")
    return [
        Record(
            str(r.get("id", f"item-{i:05d}")),
            r["prompt"],
            r["response"] or "",
            r.get("category") if isinstance(r.get("category"), str) else None,
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

    if bool(args.file) == bool(args.behaviour):
        raise SteerbenchError(
            "give exactly one of FILE (prompt/response records) or --behaviour ITEMS "
            "(a CAA behaviour or an A/B file)"
        )
    if args.behaviour:
        return evaluate_behaviour(args)
    if args.method:
        raise SteerbenchError(
            "--method steers the model a metric reads; records are already generated, so "
            "it applies only with --behaviour"
        )
    if args.out and Path(args.out).resolve() == Path(args.file).resolve():
        raise SteerbenchError(
            f"--out {args.out} is the input file: it would be overwritten (and its other "
            f"fields lost); write the scores to another file"
        )
    if args.out and Path(args.out).is_dir():
        raise SteerbenchError(f"--out {args.out} is a directory; give a .jsonl or .parquet file")
    records = read_records(Path(args.file))
    options = metric_options_from_args(args)
    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    stray = sorted(set(options) - set(names))
    if stray:
        raise SteerbenchError(
            f"--metric-option names {stray[0]!r}, which is not among --metrics "
            f"({', '.join(names)}); add it there or fix the name"
        )
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
                if not metric.rule().model_level:  # per-record values, as declared
                    row.update({k: v[i] for k, v in result.item_table().items()})
            rows.append(row)
        write_rows(Path(args.out), rows)
        log.info("Wrote per-item values to %s", args.out)
    return 0


def evaluate_behaviour(args: argparse.Namespace) -> int:
    """The A/B score of ``--behaviour`` items, read with the model as ``--method``,
    ``--artifact`` and ``--strength`` steer it (unsteered without them)."""
    from steerbench.cli.options import steering_context_from_args
    from steerbench.studies.behaviour_check import AB_METRIC, score_behaviour

    options = metric_options_from_args(args)
    stray = sorted(set(options) - {AB_METRIC})
    if stray:
        raise SteerbenchError(
            f"--metric-option names {stray[0]!r}; with --behaviour only {AB_METRIC}.* apply"
        )
    loaded = load_from_args(args)
    with steering_context_from_args(args, loaded):
        result = score_behaviour(loaded, args.behaviour, options.get(AB_METRIC, {}))
    print_results([result])
    print(
        f"p(matching) {result.aggregate:.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}] over "
        f"{result.n - result.n_missing} A/B items; {result.extra['n_not_ab']} not (A)/(B), "
        f"not scored; mean p(A) + p(B) {result.extra['p_ab'] or 0:.3f}"
    )
    if args.out:
        rows = [
            {**item, "p_matching": value}
            for item, value in zip(result.extra["items"], result.values)
        ]
        write_rows(Path(args.out), rows)
        log.info("Wrote per-item values to %s", args.out)
    return 0


def write_rows(path: Path, rows: list[dict]) -> None:
    """JSONL or Parquet by extension, written atomically."""
    from steerbench.cli.options import write_jsonl_atomic

    if path.suffix == ".parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from steerbench.files import atomic_write_bytes

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        atomic_write_bytes(path, buffer.getvalue())
    else:
        write_jsonl_atomic(path, rows)


def cmd_metrics(args: argparse.Namespace) -> int:
    from steerbench.metric import METRICS, PHASE_RULES

    width = max(len(phase) for phase in PHASE_RULES)
    columns = f"{{:16}} {{:16}} {{:{width}}} {{:6}} "  # name, source, phase, labels
    print(columns.format("name", "source", "phase", "labels") + "description")
    for entry in METRICS.entries():
        cls = entry.cls
        labels = "yes" if cls.ships_labels() else "no"
        print(columns.format(entry.name, entry.source, cls.phase, labels) + cls.description)
        options = [f.name for f in dataclasses.fields(cls.Config) if f.name != "seed"]
        if options:
            print(" " * len(columns.format("", "", "", "")) + f"options: {', '.join(options)}")
    print(
        "phases: records (the answers alone), judge (the answers, with a model as judge), "
        "steered-model (the steered model itself), steering-contrast (the model with and "
        "without steering)"
    )
    return 0


def format_table(rows: list[dict]) -> list[str]:
    """Rows of named values as aligned text: strings left, numbers right (3 decimals)."""

    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    columns = list(dict.fromkeys(key for row in rows for key in row))
    widths = {c: max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns}
    left = {c for c in columns if any(isinstance(r.get(c), str) for r in rows)}

    def line(values: dict) -> str:
        return "  ".join(
            cell(values.get(c, "")).ljust(widths[c])
            if c in left
            else cell(values.get(c, "")).rjust(widths[c])
            for c in columns
        ).rstrip()

    return [line({c: c for c in columns}), *(line(r) for r in rows)]


def cmd_agreement(args: argparse.Namespace) -> int:
    from steerbench.metric import get_metric
    from steerbench.model.loading import load_model
    from steerbench.model.weights import BUILTIN_MODELS, is_installed

    metric = get_metric(args.metric, **metric_options_from_args(args).get(args.metric, {}))
    if not metric.ships_labels():
        raise SteerbenchError(
            f"metric {args.metric!r} ships no labelled set to measure agreement with; "
            "`steerbench metrics` marks those that do in its 'labels' column"
        )
    models = []
    if metric.agreement_uses_models:
        names = args.model or [n for n, b in BUILTIN_MODELS.items() if is_installed(b)]
        models = [load_model(name, device=args.device, dtype=args.dtype) for name in names]
    table = metric.agreement(models)
    assert table is not None  # ships_labels() says it overrides agreement()
    print(f"{args.metric} {table.title}")
    for text in (*format_table(table.rows), *table.notes):
        print(text)
    return 0


def register_metric_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="list metrics (built-in and plugins)")
    p.set_defaults(handler=cmd_metrics)

    p = sub.add_parser(
        "evaluate",
        help="score prompt/response records, or a model on A/B behaviour items",
        description="Evaluate a JSONL or Parquet file of records with `prompt` and `response` "
        "(and an optional `id`) with the chosen metrics; or, with --behaviour, read the "
        "model (optionally steered) on A/B questions in CAA's format and print the mean "
        "p(matching) with its 95 %% interval.",
    )
    p.add_argument("file", nargs="?", help="JSONL or Parquet records")
    p.add_argument(
        "--behaviour",
        help="A/B items: a CAA behaviour (e.g. sycophancy, sycophancy:generate) or a JSON / "
        "JSONL file of records with question, answer_matching_behavior, "
        "answer_not_matching_behavior",
    )
    p.add_argument(
        "--metrics",
        default="refusal,quality",
        help="comma-separated metric names (default: refusal,quality)",
    )
    p.add_argument("--out", help="per-item values (.jsonl or .parquet)")
    add_metric_options(p)
    add_model_options(p)
    add_steering_options(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser(
        "agreement",
        help="agreement of a metric with the hand-labelled set it ships",
        description="Score the labelled set a metric ships (refusal: 161 responses labelled "
        "refusal/compliance/degenerate; strongreject: 332 (prompt, response) pairs labelled "
        "by how much they help) and print agreement with the labels. Metrics that judge with "
        "a model are measured with each --model (default: every installed built-in model).",
    )
    p.add_argument("metric", help="metric name (`steerbench metrics`: 'labels' column)")
    p.add_argument(
        "--model", action="append", help="a judge model (repeatable; default: built-in ones)"
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--dtype", default="auto", help="model dtype (default: auto)")
    add_metric_options(p)
    p.set_defaults(handler=cmd_agreement)
