"""`--field value` overrides for a recipe's flat config dataclass.

Every field becomes a flag: `max_seq_length` is `--max-seq-length` (or `--max_seq_length`). A bool field
is a switch: `--resume` sets it, `--resume false` clears it. The comment after a field in the recipe
is its --help text. In a notebook nothing is parsed: edit the config cell instead.
"""
import argparse
import dataclasses
import inspect
import re
import sys
import typing


def _to_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_comments(cls) -> dict[str, str]:
    """The `# comment` after each field in the dataclass source, used as --help text."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments = {}
    for line in source.splitlines():
        match = re.match(r"\s+(\w+)\s*:[^=]+=.*?#\s*(.+)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def parse_config(cls, argv: list[str] | None = None, description: str | None = None):
    """An instance of the dataclass `cls`, with the fields given on the command line overridden."""
    if argv is None:
        if in_notebook():  # Jupyter passes its own kernel arguments: they are not ours
            return cls()
        argv = sys.argv[1:]
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flags = ["--" + f.name.replace("_", "-")] + (["--" + f.name] if "_" in f.name else [])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        help_text = f"{comments.get(f.name, '')} (default: {default!r})".strip()
        if kind is bool:
            parser.add_argument(*flags, dest=f.name, type=_to_bool, nargs="?", const=True, default=default,
                                metavar="true|false", help=help_text)
        else:
            parser.add_argument(*flags, dest=f.name, type=kind, default=default, help=help_text)
    return cls(**vars(parser.parse_args(argv)))
