"""Subcommands beyond the basics in ``steerbench.cli``, one module per area.

Each module exposes ``register_*_commands(subparsers)``; ``steerbench.cli`` calls them.
"""

from steerbench.commands.bench import register_bench_commands, register_reproduce_commands
from steerbench.commands.harness import register_harness_commands
from steerbench.commands.methods import register_method_commands
from steerbench.commands.metrics import register_metric_commands
from steerbench.commands.run import register_leaderboard_commands, register_run_commands
from steerbench.commands.sae import register_sae_commands

__all__ = [
    "register_bench_commands",
    "register_harness_commands",
    "register_leaderboard_commands",
    "register_method_commands",
    "register_metric_commands",
    "register_reproduce_commands",
    "register_run_commands",
    "register_sae_commands",
]
