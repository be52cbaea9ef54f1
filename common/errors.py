"""Errors a user can fix (bad data, bad config): shown as one line and exit code 2, not a traceback."""
import errno
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
    sys.__stderr__.flush()  # os._exit skips the interpreter's own flushing: whatever stderr was swapped for
    os._exit(2)  # an excepthook cannot choose the exit code any other way


def is_disk_full(err: BaseException) -> bool:
    """A write that ran out of disk space: an OSError with ENOSPC, or what the `tokenizers` library (Rust) raises
    instead, a plain Exception whose message is the system's "No space left on device (os error 28)"."""
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    return type(err) is Exception and str(err).startswith("No space left on device")
