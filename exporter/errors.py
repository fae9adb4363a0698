"""Errors the exporter raises on bad input, each with its CLI exit code.

The message of every error is one sentence a user can act on; the CLI prints
it and exits with `exit_code`, never a traceback (DESIGN.md, "Exit codes").
"""


class ExportError(Exception):
    """Bad usage or unreadable input."""

    exit_code = 2


class UnsupportedModelError(ExportError):
    """The model uses layers or configurations the exporter cannot run."""

    exit_code = 3


class BudgetError(ExportError):
    """The planned flash or RAM exceeds the target's budget."""

    exit_code = 4
