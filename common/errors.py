"""Errors a user can fix (bad data, bad config): shown as one line and exit code 2, not a traceback."""
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


def report_user_errors(exc_type, exc, tb):
    """A sys.excepthook: UserError prints `error: ...` and exits with code 2; anything else is a real bug
    and keeps its traceback. Recipes install it with `sys.excepthook = report_user_errors`."""
    if not issubclass(exc_type, UserError):
        return sys.__excepthook__(exc_type, exc, tb)
    sys.stdout.flush()
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):  # a training bar stopped mid-line
        bar.close()  # ends its line, so the error starts on its own
    line = f"error: {exc}"
    if tell_the_launcher(line):
        line += " (the launcher's report of the stopped processes follows, and ends with this line as their cause)"
    # One write, so the line leaves in one piece: print() writes the text and its newline apart, and unbuffered
    # (PYTHONUNBUFFERED) the two processes of a torchrun run then print "error: ...error: ...\n\n" as one line.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    sys.__stderr__.flush()  # os._exit skips the interpreter's own flushing: whatever stderr was swapped for
    os._exit(2)  # an excepthook cannot choose the exit code any other way


def tell_the_launcher(line: str) -> bool:
    """Under torchrun (and accelerate launch, which runs it), write `line` to the error file the launcher reads when
    a process fails: its ChildFailedError report, printed after every process has ended and so after this line,
    then shows it as each process's cause instead of a link to its docs. True when there is such a file."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not error_file:
        return False
    try:
        with open(error_file, "w", encoding="utf-8") as f:
            json.dump({"message": line, "timestamp": int(time.time())}, f)
    except OSError:
        return False
    return True


def is_disk_full(err: BaseException, directory=None) -> bool:
    """A write that ran out of disk space: an OSError with ENOSPC; the system's "No space left on device" in another
    library's error (the tokenizers library and safetensors, both Rust, raise a plain Exception or SafetensorError);
    or torch.save's RuntimeError ("unexpected pos", "file write failed": its C++ stream keeps no errno) when the disk
    holding `directory`, where it wrote, has no space left."""
    if isinstance(err, UserError):
        return False
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno == errno.ENOSPC
    if "No space left on device" in str(err):
        return True
    torch_stream = isinstance(err, RuntimeError) and ("inline_container" in str(err) or "write failed" in str(err))
    return torch_stream and directory is not None and no_space_left(directory)


# A write that failed for want of space took what was left: a disk with less than this free is full.
NEARLY_FULL_BYTES = 16 * 2**20


def no_space_left(directory) -> bool:
    probe = Path(directory).absolute()
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free < NEARLY_FULL_BYTES
