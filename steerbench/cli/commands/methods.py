"""``steerbench methods`` and ``steerbench discover``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import yaml

from steerbench.cli.options import add_model_options, load_from_args, prompt_format_from_args
from steerbench.errors import SteerbenchError

log = logging.getLogger("steerbench")
DEFAULT_POSITIVE, DEFAULT_NEGATIVE = "jbb-harmful:discovery", "jbb-benign:discovery"


def parse_params(pairs: list[str] | None) -> dict:
    """``["top_k=20", "layers=[10, 12]"]`` -> ``{"top_k": 20, "layers": [10, 12]}`` (YAML)."""
    params = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SteerbenchError(f"--param takes KEY=VALUE, got {pair!r}")
        params[key.strip()] = yaml.safe_load(value)
    return params


def cmd_methods(args: argparse.Namespace) -> int:
    from steerbench.method import METHODS

    print(f"{'name':24} {'source':16} {'acts on':7} {'neutral':>7}  description")
    for entry in METHODS.entries():
        cls = entry.cls
        print(
            f"{entry.name:24} {entry.source:16} {cls.level:7} {cls.neutral_strength:7g}  "
            f"{cls.description}"
        )
    return 0


def discovery_sets(args: argparse.Namespace) -> tuple[str, str]:
    """(positive, negative) prompt sets: ``--behaviour``'s contrast pairs (its discovery
    split, as a behaviours run fits on) or ``--positive``/``--negative``."""
    from steerbench.run.behaviour_tasks import contrast_sets

    if args.behaviour is None:
        return args.positive or DEFAULT_POSITIVE, args.negative or DEFAULT_NEGATIVE
    if args.positive or args.negative:
        raise SteerbenchError("give --behaviour or --positive/--negative, not both")
    return contrast_sets(args.behaviour)


def drawn(records: list, args: argparse.Namespace) -> list:
    """``--limit`` records by the seeded draw a behaviours run fits on (both sides alike)."""
    from steerbench.run.prompt_sets import take_stratified

    return take_stratified(records, args.limit, seed=args.split_seed) if args.limit else records


def cmd_discover(args: argparse.Namespace) -> int:
    from steerbench.method import FitContext, get_method
    from steerbench.run.prompt_sets import load_prompts

    params = parse_params(args.param)
    if args.top_k is not None:
        params["top_k"] = args.top_k
    method = get_method(args.method, **params)
    args.positive, args.negative = discovery_sets(args)
    positive, negative = (
        [r.text for r in drawn(load_prompts(spec, split_seed=args.split_seed), args)]
        for spec in (args.positive, args.negative)
    )
    out = Path(args.out)
    loaded = load_from_args(args)
    ctx = FitContext(
        loaded.model,
        loaded.tokenizer,
        fmt=prompt_format_from_args(args),
        batch_size=args.batch_size,
        model_name=loaded.name,
        model_revision=loaded.revision,
        progress=True,
    )
    start = time.perf_counter()
    artifact = method.fit(ctx, positive, negative)
    seconds = time.perf_counter() - start
    artifact.metadata.update(
        positive=args.positive, negative=args.negative, fit_seconds=round(seconds, 2)
    )
    artifact.save(out)
    print(
        f"{method.name} fitted on {len(positive)} positive / {len(negative)} negative prompts "
        f"in {seconds:.1f} s -> {out}"
    )
    for line in method.summary(artifact):
        print(f"  {line}")
    return 0


def register_method_commands(sub: argparse._SubParsersAction) -> None:
    from steerbench.run.behaviour_tasks import TASK_BEHAVIOURS

    p = sub.add_parser("methods", help="list steering methods (built-in and plugins)")
    p.set_defaults(handler=cmd_methods)

    p = sub.add_parser(
        "discover",
        help="fit a steering method and save its artifact",
        description="Fit a method on positive vs negative prompts and save the artifact "
        "(safetensors + JSON) for `steerbench generate --artifact`.",
    )
    p.add_argument("--method", default="cna", help="method name (default: cna)")
    p.add_argument(
        "--positive", help=f"positive prompts: file or set name (default: {DEFAULT_POSITIVE})"
    )
    p.add_argument(
        "--negative", help=f"negative prompts: file or set name (default: {DEFAULT_NEGATIVE})"
    )
    p.add_argument(
        "--behaviour",
        choices=TASK_BEHAVIOURS,
        help="fit on a behaviour's contrast pairs (its discovery split: the question with "
        "the matching vs the other answer letter, or TruthfulQA's true vs a false answer, "
        "read at the answer) instead of --positive/--negative",
    )
    p.add_argument(
        "--limit", type=int, help="use this many prompts per side (seeded draw; default: all)"
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of the splits (default: 0)")
    p.add_argument("--top-k", type=int, help="circuit size for neuron methods (count)")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=VALUE",
        help="method hyper-parameter (YAML value), repeatable",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", required=True, help="artifact directory")
    add_model_options(p)
    p.set_defaults(handler=cmd_discover)
