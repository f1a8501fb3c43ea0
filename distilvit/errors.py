"""The one exception type for failures a user can cause and fix.

The CLI prints a `UserError` as one line (no traceback) and exits with status 2. Anything else that escapes
is a bug and keeps its traceback. This module knows nothing about what went wrong; callers write the message,
which must name the input and say what to do.
"""


class UserError(Exception):
    """A failure caused by the user's input (a path, a flag, a model, a dataset), with what to do about it."""
