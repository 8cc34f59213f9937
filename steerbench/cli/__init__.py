"""The command line: argument parsing and one module per subcommand group. The top floor:
nothing in the package imports it."""

from steerbench.cli.main import main

__all__ = ["main"]
