"""Exceptions the scripts turn into exit codes (docs/cli.md#exit-codes)."""


class InputError(Exception):
    """The input is unusable as a whole (missing file, not a proxy DB): exit 2, one line."""


class CheckFailed(Exception):
    """A check the user asked for failed (validator thresholds): exit 1."""
