"""Command-line flags for a recipe's flat config dataclass, parsed by tyro.

Every field is a flag: `max_seq_length` is `--max-seq-length` (`--max_seq_length` works too). A bool field is a
switch: `--resume` sets it, `--no-resume` clears it. A `Literal[...]` field takes one of its choices, checked when
the command line is parsed, and `--help` lists them. The comment after a field is its `--help` text (tyro reads it).
In a notebook nothing is parsed: edit the config cell instead.
"""
import contextlib
import io
import re
import sys

import tyro


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def parse_config(cls, argv: list[str] | None = None, description: str | None = None):
    """An instance of the dataclass `cls`, with the fields given on the command line overridden.

    A bad flag or value exits with code 2 and one line, `error: ...` (tyro draws a box of several lines)."""
    if argv is None:
        if in_notebook():  # Jupyter passes its own kernel arguments: they are not ours
            return cls()
        argv = sys.argv[1:]
    if any(arg in ("-h", "--help") for arg in argv):
        return tyro.cli(cls, args=argv, description=description)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(captured):
            return tyro.cli(cls, args=argv, description=description)
    except SystemExit as stop:
        if stop.code in (0, None):
            print(captured.getvalue(), end="")
            raise
        print(f"error: {one_line(captured.getvalue())} ({sys.argv[0]} --help lists every flag)", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(box: str) -> str:
    """tyro's error box as one line: its text without the frame, the title and the pointer to --help."""
    lines = [re.sub(r"[│╭╮╰╯]|[─-]{3,}", " ", line).strip() for line in box.splitlines()]
    lines = [line for line in lines if line and not line.startswith("For full helptext")]
    if len(lines) > 1:
        lines = lines[1:]  # the box's title ("Invalid choice") repeats what the text says
    return " ".join(" ".join(lines).replace("Argument helptext:", "; the flag:").split()).replace(" ;", ";")
