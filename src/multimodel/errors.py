"""Errors a user can fix, as opposed to bugs.

Every error class the project raises for something outside the code (a bad config value, a
missing or damaged file, an unknown task, an input the model cannot take) derives from
:class:`UserError`. The command line prints such an error as one line (``multimodel train:
error: ...``) and exits with status 2; any other exception is a bug and shows its traceback.
This module imports nothing from the package, so every part may use it.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what is wrong and what to do."""


class CheckpointError(UserError, RuntimeError):
    """A saved model or training checkpoint that cannot be used; the message names the file."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it.

    Args:
        what: what needs it ("the web demo").
        extra: the extra of ``pip install 'multimodel[extra]'``.
        error: the ImportError raised.
    """

    def __init__(self, what: str, extra: str, error: ImportError):
        super().__init__(f"{what} needs the optional dependency {error.name or error}: "
                         f"pip install 'multimodel[{extra}]'")
        self.extra = extra
