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


def cmd_discover(args: argparse.Namespace) -> int:
    from steerbench.method import FitContext, get_method
    from steerbench.run.prompt_sets import load_prompts

    params = parse_params(args.param)
    if args.top_k is not None:
        params["top_k"] = args.top_k
    method = get_method(args.method, **params)
    positive = [r.text for r in load_prompts(args.positive)]
    negative = [r.text for r in load_prompts(args.negative)]
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
        "--positive",
        default="jbb-harmful:discovery",
        help="positive prompts: file or set name (default: jbb-harmful:discovery)",
    )
    p.add_argument(
        "--negative",
        default="jbb-benign:discovery",
        help="negative prompts: file or set name (default: jbb-benign:discovery)",
    )
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
