"""Registers the subcommands that live beside their library modules (discover, methods, ...)."""
