"""User-facing errors.

A ``SteerbenchError`` is a problem with the user's input or environment. The CLI prints
its message as one line (no traceback), so every message names the problem *and* the fix.
"""


class SteerbenchError(Exception):
    """Bad input or a missing resource, reported to the user as one line: line breaks and
    other control characters in the message (a key or value the user wrote) are shown
    escaped, so a message is always one line."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if any(ord(c) < 32 or c in "\x7f\u2028\u2029\x85" for c in text):
            text = "".join(
                c if ord(c) >= 32 and c not in "\x7f\u2028\u2029\x85" else repr(c)[1:-1]
                for c in text
            )
        super().__init__(text)
