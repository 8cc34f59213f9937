"""Subcommands beyond the basics in ``steerbench.cli``, one module per area.

Each module exposes ``register_*_commands(subparsers)``; ``steerbench.cli`` calls them.
"""

from steerbench.cli.commands.bench import register_bench_commands, register_reproduce_commands
from steerbench.cli.commands.lm_eval import register_harness_commands
from steerbench.cli.commands.methods import register_method_commands
from steerbench.cli.commands.metrics import register_metric_commands
from steerbench.cli.commands.run import register_leaderboard_commands, register_run_commands
from steerbench.cli.commands.sae_train import register_sae_commands
from steerbench.cli.commands.validate import register_validate_commands

__all__ = [
    "register_bench_commands",
    "register_harness_commands",
    "register_leaderboard_commands",
    "register_method_commands",
    "register_metric_commands",
    "register_reproduce_commands",
    "register_run_commands",
    "register_sae_commands",
    "register_validate_commands",
]
