"""The error a user can fix, as opposed to a bug.

Stages raise :class:`UserError` (or a subclass) with a one-line message that names what was
wrong and how to fix it; the CLI prints that line (the traceback only with ``--debug``) and
exits non-zero. Anything else reaching the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, missing data or an unreachable dependency, with the fix in the message."""
