"""``steerbench bench`` and ``steerbench reproduce``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from steerbench.cli.options import add_model_options, load_from_args

log = logging.getLogger("steerbench")


def cmd_bench(args: argparse.Namespace) -> int:
    from steerbench.files import atomic_write_text
    from steerbench.run.config import load_config
    from steerbench.studies.bench import run_bench
    from steerbench.studies.bench_table import format_table

    config = load_config(args.config)
    loaded = load_from_args(args)
    figures = run_bench(
        loaded,
        n_discovery=args.n_discovery,
        n_generate=args.n_generate,
        n_reference=args.n_reference,
        new_tokens=args.new_tokens,
        batch_size=args.batch_size,
        n_metric_items=args.n_metric_items,
        n_answers=args.n_answers,
        answer_tokens=args.answer_tokens,
        config=config,
    )
    print(format_table(figures))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(figures, indent=1) + "\n")
        log.info("Wrote %s", args.json)
    return 0


def register_bench_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure discovery and generation speed against baselines",
        description="Discovery vs a plain forward pass; steered (folded weights, batched "
        "hooks) vs unsteered vs reference-style generation; continuous vs static batching "
        "on real answers; each model-reading metric's items/s and forward passes per item "
        "against one plain batched forward pass over its own input; memory; generation's "
        "FLOP/s (prompt + answer tokens) as a share of a measured matmul ceiling; and the "
        "--config run's wall time projected per phase from these rates; all in one "
        "process, as ratios.",
    )
    p.add_argument("--json", help="also write the figures as JSON")
    p.add_argument("--n-discovery", type=int, default=200)
    p.add_argument("--n-generate", type=int, default=32)
    p.add_argument(
        "--n-reference", type=int, default=8, help="prompts for the slow one-at-a-time baseline"
    )
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--n-metric-items",
        type=int,
        default=16,
        help="benign answers each metric scores (answered with the --answer-tokens budget)",
    )
    p.add_argument(
        "--n-answers",
        type=int,
        help="prompts answered to their end, static vs continuous batching (default: all "
        "of one cell of --config, 140 on the default; fewer: evenly spaced among them)",
    )
    p.add_argument(
        "--answer-tokens",
        type=int,
        help="their new-token budget (default: --config's max_new_tokens, 64 on the default, "
        "so that the projection's mean answer length is the run's)",
    )
    p.add_argument(
        "--config",
        default="default",
        help="config whose model-reading metrics are timed, whose generation settings "
        "continuous batching also runs with, one of whose cells' prompts are answered, and "
        "whose run is projected (built-in name or YAML; default: default)",
    )
    add_model_options(p)
    p.set_defaults(handler=cmd_bench)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from steerbench.studies.reproduce import run_reproduction

    start = time.perf_counter()
    path = run_reproduction(
        args.model,
        Path(args.results),
        Path(args.out),
        base_model=args.base_model,
        device=args.device,
        dtype=args.dtype,
        progress=not args.quiet,
        limit=args.limit,
        config_spec=args.config,
    )
    print(f"wrote {path} and its figures in {(time.perf_counter() - start) / 60:.1f} min")
    return 0


def register_reproduce_commands(sub: argparse._SubParsersAction) -> None:
    from steerbench.model.weights import DEFAULT_MODEL

    p = sub.add_parser(
        "reproduce",
        help="check the CNA paper's claims and write REPRODUCTION.md",
        description="Run the paper's analyses on a model (steering grid, circuit layers, "
        "stability, held-out check, keyword vs judge, base vs instruct).",
    )
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--config",
        default="default",
        help="benchmark config whose prompts, format, seeds and CNA settings are reproduced "
        "(built-in name or YAML file; default: default)",
    )
    p.add_argument("--base-model", help="base counterpart of --model, for the overlap analysis")
    p.add_argument(
        "--results",
        default="results/default",
        help="results directory (shared with `steerbench run`; default results/default)",
    )
    p.add_argument("--out", default=".", help="where REPRODUCTION.md and reproduction/ go")
    p.add_argument(
        "--limit", type=int, help="evaluate on this many prompts per set (a quick, rougher check)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.set_defaults(handler=cmd_reproduce)
