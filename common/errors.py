"""Errors a user can fix (bad data, bad config): shown as one line and exit code 2, not a traceback."""
import os
import sys


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


def report_user_errors(exc_type, exc, tb):
    """A sys.excepthook: UserError prints `error: ...` and exits with code 2; anything else is a real bug
    and keeps its traceback. Recipes install it with `sys.excepthook = report_user_errors`."""
    if not issubclass(exc_type, UserError):
        return sys.__excepthook__(exc_type, exc, tb)
    sys.stdout.flush()
    print(f"error: {exc}", file=sys.stderr, flush=True)
    os._exit(2)  # an excepthook cannot choose the exit code any other way
