"""Command-line options shared by several subcommands, and their conversion to objects."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from steerbench.errors import SteerbenchError


def finite_float(text: str) -> float:
    """argparse type: a finite number (``nan`` and ``inf`` are refused with one line)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every subcommand that loads a model."""
    from steerbench.model.weights import DEFAULT_MODEL

    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"built-in name, local directory, .gguf file or Hugging Face id "
        f"(default: {DEFAULT_MODEL})",
    )
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    group.add_argument(
        "--dtype",
        default="auto",
        help="auto (bf16 where fast, else float32), bfloat16, float16 or float32",
    )
    group.add_argument("--revision", help="hub revision (commit, tag or branch) for hub ids")
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow custom model code from the model repository (off by default)",
    )
    group.add_argument(
        "--allow-pickle-weights",
        action="store_true",
        help="also load .bin (pickle) weights, which can run code: only for files you trust "
        "(off by default: safetensors only)",
    )
    chat = group.add_mutually_exclusive_group()
    chat.add_argument(
        "--chat",
        dest="chat",
        action="store_true",
        default=None,
        help="always apply the chat template",
    )
    chat.add_argument(
        "--no-chat", dest="chat", action="store_false", help="feed raw prompts (base models)"
    )
    group.add_argument("--system-prompt", help="system message for chat-formatted prompts")


def add_generation_options(parser: argparse.ArgumentParser, *, max_new_tokens: int = 64) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument("--sample", action="store_true", help="sample instead of greedy")
    group.add_argument("--temperature", type=finite_float, default=1.0)
    group.add_argument("--top-p", type=finite_float, default=1.0)
    group.add_argument("--seed", type=int, default=0)


def load_from_args(args: argparse.Namespace):
    from steerbench.model.loading import load_model

    return load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        revision=args.revision,
        trust_remote_code=args.trust_remote_code,
        allow_pickle_weights=args.allow_pickle_weights,
    )


def prompt_format_from_args(args: argparse.Namespace):
    from steerbench.model.chat import PromptFormat

    return PromptFormat(chat=args.chat, system_prompt=args.system_prompt)


def generation_settings_from_args(args: argparse.Namespace):
    from steerbench.model.generation import GenerationSettings

    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    from steerbench.files import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def add_steering_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("steering")
    group.add_argument("--method", help="steering method name (see `steerbench methods`)")
    group.add_argument("--artifact", help="directory written by `steerbench discover`")
    group.add_argument("--strength", type=finite_float, help="steering strength (method's scale)")


def steering_context_from_args(args: argparse.Namespace, loaded):
    """A no-op context unless ``--method`` is given (filled in by the methods layer)."""
    from contextlib import nullcontext

    if getattr(args, "method", None) is None:
        if getattr(args, "strength", None) is not None or getattr(args, "artifact", None):
            raise SteerbenchError(
                "--strength and --artifact steer only with --method NAME; add it, or drop them "
                "to generate unsteered"
            )
        return nullcontext()
    from steerbench.method import steering_from_cli

    return steering_from_cli(args, loaded)
