"""``steerbench lm-eval``: lm-evaluation-harness's command line, with steerbench's model type."""

from __future__ import annotations

import argparse


def cmd_lm_eval(args: argparse.Namespace) -> int:
    from steerbench.integrations.lm_eval import main

    return main(args.lm_eval_args)


def register_harness_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lm-eval",
        help="run lm-evaluation-harness tasks on a steered model",
        description="lm-eval's own command line (`lm_eval ...`, every option passes through) "
        "with the model type `steerbench` registered and the shipped MMLU subset available "
        "as the task `steerbench_mmlu`. Example: steerbench lm-eval --model steerbench "
        "--model_args model=qwen2.5-coder-1.5b-instruct,method=cna,artifact=DIR,strength=0 "
        "--tasks steerbench_mmlu. Needs pip install 'steerbench[lm-eval]'.",
        epilog="model_args of the steerbench model type: model (anything --model takes), "
        "method, artifact, strength, device, dtype, revision, trust_remote_code, "
        "allow_pickle_weights, batch_size.",
    )
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, help="arguments for lm_eval")
    p.set_defaults(handler=cmd_lm_eval)
