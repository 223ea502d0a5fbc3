"""Errors that the CLI turns into a one-line message and exit code 2 (no traceback)."""


class UserError(Exception):
    """Bad input from the user: a value out of range, a missing file, an unknown name.

    The message must say what was wrong and, where it helps, what is allowed.
    """


class MeasurementError(RuntimeError):
    """A measurement failed even after retries; names the setting(s) that failed."""
