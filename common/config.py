"""Command-line flags for a recipe's flat config dataclass, parsed by tyro.

Every field is a flag: `max_seq_length` is `--max-seq-length` (`--max_seq_length` works too). A bool field is a
switch: `--resume` sets it, `--no-resume` clears it. A `Literal[...]` field takes one of its choices, checked when
the command line is parsed, and `--help` lists them. The comment after a field is its `--help` text (tyro reads it).
A field typed `AutoSwitch` is a switch that may also be left unset (None: the recipe decides): `--load-in-4bit`
sets it, `--no-load-in-4bit` clears it, and `--load-in-4bit true|false|auto` works too.
In a notebook nothing is parsed: edit the config cell instead.
"""
import contextlib
import dataclasses
import io
import re
import sys
from typing import Annotated

import tyro
from tyro.constructors import PrimitiveConstructorSpec

SWITCH_VALUES = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False, "auto": None}


def switch_value(args: list[str]) -> bool | None:
    if not args:  # the flag alone
        return True
    if len(args) > 1 or args[0].lower() not in SWITCH_VALUES:
        raise ValueError(f"expected nothing, true, false or auto, not {' '.join(args)!r}")
    return SWITCH_VALUES[args[0].lower()]


# tyro renders `bool | None` as a required value in {None,True,False}; this makes it a switch with an unset state.
AutoSwitch = Annotated[bool | None, PrimitiveConstructorSpec(
    nargs="*", metavar="", instance_from_str=switch_value, is_instance=lambda value: value in (None, True, False),
    str_from_instance=lambda value: ["auto" if value is None else str(value).lower()])]


def switch_spellings(cls, types) -> dict[str, tuple[str, bool]]:
    """Every flag of the fields of these types, as written on a command line: {"--no_resume": ("resume", False)}
    (both --resume and --no-resume, with - or _)."""
    spellings = {}
    for field in dataclasses.fields(cls):
        if field.type in types:
            for spelling in (field.name, field.name.replace("_", "-")):
                spellings[f"--{spelling}"] = (field.name.replace("_", "-"), True)
                spellings[f"--no-{spelling}"] = spellings[f"--no_{spelling}"] = (field.name.replace("_", "-"), False)
    return spellings


def expand_negated_switches(cls, argv: list[str]) -> list[str]:
    """`--no-load-in-4bit` (or `--no_load_in_4bit`) is `--load-in-4bit false`: tyro makes no --no- flag for an
    AutoSwitch field."""
    negated = {flag: f"--{name}" for flag, (name, sets) in switch_spellings(cls, (AutoSwitch, "AutoSwitch")).items()
               if not sets}
    expanded = []
    for arg in argv:
        expanded += [negated[arg], "false"] if arg in negated else [arg]
    return expanded


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def parse_config(cls, argv: list[str] | None = None, description: str | None = None):
    """An instance of the dataclass `cls`, with the fields given on the command line overridden.

    A bad flag or value exits with code 2 and one line, `error: ...` (tyro draws a box of several lines)."""
    if argv is None:
        if in_notebook():  # Jupyter passes its own kernel arguments: they are not ours
            return cls()
        argv = sys.argv[1:]
    argv = expand_negated_switches(cls, list(argv))
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
        message = captured.getvalue()
        if "Unrecognized options" in message:
            message = switch_given_a_value(cls, argv) or message
        print(f"error: {one_line(message)} ({sys.argv[0]} --help lists every flag)", file=sys.stderr)
        raise SystemExit(2) from None


def switch_given_a_value(cls, argv: list[str]) -> str | None:
    """`--resume maybe` (or `--resume=maybe`): tyro says only "Unrecognized options: maybe", naming the value and not
    the switch it was written for, which takes none. The message that names it, or None when no switch has a value."""
    switches = {flag: name for flag, (name, _) in switch_spellings(cls, (bool, "bool")).items()}
    for arg, following in zip(argv, argv[1:] + [None]):
        flag, equals, value = arg.partition("=")
        if not equals:
            value = following if following is not None and not following.startswith("-") else None
        if flag in switches and value is not None:
            name, given = switches[flag], arg if equals else f"{arg} {value}"
            return f"{given}: {flag} takes no value; write --{name} to set it or --no-{name} to clear it"
    return None


def one_line(box: str) -> str:
    """tyro's error box as one line: its text without the frame, the title and the pointer to --help."""
    lines = [re.sub(r"[│╭╮╰╯]|[─-]{3,}", " ", line).strip() for line in box.splitlines()]
    lines = [line for line in lines if line and not line.startswith("For full helptext")]
    if len(lines) > 1:
        lines = lines[1:]  # the box's title ("Invalid choice") repeats what the text says
    return " ".join(" ".join(lines).replace("Argument helptext:", "; the flag:").split()).replace(" ;", ";")
