"""User-facing errors.

A ``SteerbenchError`` is a problem with the user's input or environment. The CLI prints
its message as one line (no traceback), so every message names the problem *and* the fix.
"""


class SteerbenchError(Exception):
    """Bad input or a missing resource, reported to the user as one line."""
