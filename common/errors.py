"""Errors a user can fix (bad data, bad config): shown as one line and exit code 2, not a traceback."""
import logging
import os
import sys

# torchao (imported by transformers and Unsloth) registers Enums with an API torch 2.14 deprecates, and torch logs a
# warning line for it on every start; it is harmless and only hides the one line an error should be.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


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
