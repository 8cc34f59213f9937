"""``steerbench sae train``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from steerbench.cli.options import add_model_options, load_from_args, prompt_format_from_args
from steerbench.errors import SteerbenchError


def cmd_sae_train(args: argparse.Namespace) -> int:
    from steerbench.integrations import sae_training as sae_lib
    from steerbench.model.adapter import ModelAdapter

    settings = sae_lib.SAETrainingSettings(
        width=args.width,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        l1_coefficient=args.l1,
        max_tokens=args.max_tokens,
    )
    out = Path(args.out)
    loaded = load_from_args(args)
    adapter = ModelAdapter.from_model(loaded.model)
    layer = (
        args.layer if args.layer is not None else sae_lib.default_training_layer(adapter.n_layers)
    )
    if not 0 <= layer < adapter.n_layers:
        raise SteerbenchError(f"--layer must be in 0..{adapter.n_layers - 1}, got {layer}")
    start = time.perf_counter()
    activations = sae_lib.training_residuals(
        loaded, layer, prompt_format_from_args(args), settings.max_tokens, out
    )
    collected = time.perf_counter() - start
    sae, report = sae_lib.train_sae(
        activations, settings, hook_name=f"resid_post.{layer}", model_name=loaded.name
    )
    report["collect_seconds"] = collected
    sae_lib.save_sae(sae, out, report, settings, layer)
    print(
        f"SAE {adapter.d_model} -> {settings.width} on resid_post.{layer} of {loaded.name}: "
        f"{report['train_tokens']:,} training tokens, {settings.steps} steps x "
        f"{settings.batch_size}"
    )
    print(
        f"  reconstruction MSE {report['mse']:.4g}, explained variance "
        f"{report['explained_variance']:.3f}, L0 {report['l0']:.1f}, dead features "
        f"{report['dead_fraction']:.1%}"
    )
    print(
        f"  collect {collected:.0f} s, train {report['train_seconds']:.0f} s -> {out} "
        f"(load with sae_lens.SAE.load_from_disk)"
    )
    return 0


def register_sae_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sae", help="sparse autoencoders (train one offline)")
    actions = p.add_subparsers(dest="sae_command", metavar="ACTION", required=True)
    t = actions.add_parser(
        "train",
        help="train a sae-lens SAE on the model's residual stream",
        description="Collect residual activations over the shipped text mix (cached in "
        "--out, and reused only by a rerun with the same model, dtype, layer, prompt format "
        "and --max-tokens) and train a sae-lens StandardTrainingSAE offline.",
    )
    t.add_argument("--out", required=True, help="output directory (sae-lens format)")
    t.add_argument("--layer", type=int, help="residual layer (default: CAA's layer rule)")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--width", type=int, default=4096, help="number of SAE features")
    t.add_argument("--batch-size", type=int, default=2048)
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--l1", type=float, default=5.0, help="L1 sparsity coefficient")
    t.add_argument("--max-tokens", type=int, default=200_000, help="activation tokens to use")
    add_model_options(t)
    t.set_defaults(handler=cmd_sae_train)
