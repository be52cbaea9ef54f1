"""A renderer for the part of Go's text/template that Ollama TEMPLATEs use, so an export can check, without Go
installed, that a Modelfile's TEMPLATE renders the run's conversations exactly as the chat template does.

Covered, with Go's semantics (tests/test_modelfile.py checks it against the real engine when `go` is installed):
text and {{- -}} trims, comments, {{ pipeline }}, if / else if / else, range (with `$i, $m :=`), with,
variables (`$x := ...`, `$x = ...`, `$`), fields (.A.B, $m.Role, (index . 0).Role), string / number / bool
literals, and the functions and, or (both short-circuit, as since Go 1.18), not, eq, ne, len, index, slice.
Anything else is an error, never a guess. Values: dicts with the Go field names (Ollama's api.Message fields:
Role, Content), lists, str, int, bool.
"""
import re
from dataclasses import dataclass, field

ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
TOKEN = re.compile(r'\s*(?:(?P<str>"(?:\\.|[^"\\])*")|(?P<raw>`[^`]*`)|(?P<num>-?\d+)|(?P<op>:=|[()|=,])'
                   r"|(?P<var>\$\w*)|(?P<field>(?:\.\w+)+|\.)|(?P<ident>\w+))")
GO_SPACE = " \t\r\n"


class GoTemplateError(Exception):
    pass


@dataclass
class Node:
    kind: str                      # text | action | if | range | with
    value: object = None           # text, or the pipeline
    body: list = field(default_factory=list)
    orelse: list = field(default_factory=list)
    variables: list = field(default_factory=list)  # range $i, $m := ...


def render(template: str, data: dict) -> str:
    return "".join(_execute(parse(template), data, [{"$": data}], data))


# --------------------------------------------------------------------------- parsing

def _pieces(template: str):
    """("text", s) and ("action", s) in order, with the trims applied to the text beside each action."""
    pieces, pos = [], 0
    for m in ACTION.finditer(template):
        pieces.append(["text", template[pos:m.start()]])
        if m.group(1) and pieces:
            pieces[-1][1] = pieces[-1][1].rstrip(GO_SPACE)
        pieces.append(["action", m.group(2).strip(), bool(m.group(3))])
        pos = m.end()
    pieces.append(["text", template[pos:]])
    for i, piece in enumerate(pieces):
        if piece[0] == "action" and piece[2] and i + 1 < len(pieces):
            pieces[i + 1][1] = pieces[i + 1][1].lstrip(GO_SPACE)
    return [(p[0], p[1]) for p in pieces if p[0] == "action" or p[1]]


def parse(template: str) -> list:
    pieces = _pieces(template)
    nodes, end, _ = _parse_list(pieces, 0)
    if end != len(pieces):
        raise GoTemplateError(f"unexpected {{{{{pieces[end][1]}}}}}")
    return nodes


def _parse_list(pieces, pos):
    """Nodes until an unmatched end / else; returns (nodes, position of that action, its text)."""
    nodes = []
    while pos < len(pieces):
        kind, text = pieces[pos]
        if kind == "text":
            nodes.append(Node("text", text))
            pos += 1
            continue
        if text.startswith("/*"):
            if not text.endswith("*/"):
                raise GoTemplateError(f"unclosed comment {text!r}")
            pos += 1
            continue
        word = text.split(None, 1)[0] if text else ""
        if word in ("end", "else"):
            return nodes, pos, text
        if word in ("if", "with", "range"):
            node, pos = _parse_branch(pieces, pos, word, text[len(word):].strip())
            nodes.append(node)
            continue
        if word in ("define", "template", "block", "break", "continue"):
            raise GoTemplateError(f"{{{{{text}}}}} is not supported here")
        nodes.append(Node("action", _parse_pipeline(text)))
        pos += 1
    return nodes, pos, None


def _parse_branch(pieces, pos, word, rest):
    node = Node(word)
    if word == "range":
        m = re.match(r"(\$\w+)\s*(?:,\s*(\$\w+)\s*)?:=\s*(.*)", rest, re.S)
        if m:
            node.variables = [v for v in m.groups()[:2] if v]
            rest = m.group(3)
    node.value = _parse_pipeline(rest)
    node.body, pos, text = _parse_list(pieces, pos + 1)
    if text is None:
        raise GoTemplateError(f"{{{{{word} {rest}}}}} has no {{{{end}}}}")
    if text == "else":
        node.orelse, pos, text = _parse_list(pieces, pos + 1)
        if text != "end":
            raise GoTemplateError(f"{{{{else}}}} of {{{{{word} {rest}}}}} must be followed by {{{{end}}}}")
        return node, pos + 1
    if text.startswith("else "):  # else if / else with: the rest of the chain is the else branch
        inner_word, inner_rest = text[5:].strip().split(None, 1)
        if inner_word not in ("if", "with"):
            raise GoTemplateError(f"unexpected {{{{{text}}}}}")
        inner, pos = _parse_branch(pieces, pos, inner_word, inner_rest)
        node.orelse = [inner]
        return node, pos
    return node, pos + 1


def _tokens(text: str):
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = TOKEN.match(text, pos)
        if not m:
            raise GoTemplateError(f"cannot parse {text[pos:]!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind), m.start(kind), m.end(kind)))
        pos = m.end()
    return tokens


def _parse_pipeline(text: str):
    """('decl' | 'assign' | None, variable, [command, ...]); a command is a list of operands."""
    tokens = _tokens(text)
    mode, variable = None, None
    if len(tokens) >= 2 and tokens[0][0] == "var" and tokens[1][1] in (":=", "="):
        mode, variable = ("decl" if tokens[1][1] == ":=" else "assign"), tokens[0][1]
        tokens = tokens[2:]
    commands, pos = _parse_commands(tokens, 0, closing=False)
    if pos != len(tokens):
        raise GoTemplateError(f"unexpected {tokens[pos][1]!r} in {text!r}")
    if not commands or not commands[0]:
        raise GoTemplateError(f"empty pipeline {text!r}")
    return mode, variable, commands


def _parse_commands(tokens, pos, closing):
    commands, current = [], []
    while pos < len(tokens):
        kind, value, start, _ = tokens[pos]
        if value == ")" and kind == "op":
            if not closing:
                raise GoTemplateError("unmatched ')'")
            break
        if value == "|" and kind == "op":
            commands.append(current)
            current = []
            pos += 1
            continue
        operand, pos = _parse_operand(tokens, pos)
        current.append(operand)
    commands.append(current)
    return commands, pos


def _parse_operand(tokens, pos):
    kind, value, start, end = tokens[pos]
    if kind == "op" and value == "(":
        commands, pos = _parse_commands(tokens, pos + 1, closing=True)
        if pos >= len(tokens) or tokens[pos][1] != ")":
            raise GoTemplateError("unclosed '('")
        end = tokens[pos][3]
        operand = ("pipe", (None, None, commands))
        pos += 1
    elif kind == "str":
        operand, pos = ("lit", _go_string(value)), pos + 1
    elif kind == "raw":
        operand, pos = ("lit", value[1:-1]), pos + 1
    elif kind == "num":
        operand, pos = ("lit", int(value)), pos + 1
    elif kind == "ident" and value in ("true", "false"):
        operand, pos = ("lit", value == "true"), pos + 1
    elif kind == "ident":
        operand, pos = ("func", value), pos + 1
    elif kind == "var":
        operand, pos = ("var", value), pos + 1
    elif kind == "field":
        operand, pos = ("dot", None), pos + 1
        if value != ".":
            operand = ("fields", operand, value[1:].split("."))
    else:
        raise GoTemplateError(f"unexpected {value!r}")
    # A field chain right after an operand, with no space between, reads a field of it: (index . 0).Role, $m.Role.
    while pos < len(tokens) and tokens[pos][0] == "field" and tokens[pos][2] == end and tokens[pos][1] != ".":
        operand = ("fields", operand, tokens[pos][1][1:].split("."))
        end = tokens[pos][3]
        pos += 1
    return operand, pos


def _go_string(literal: str) -> str:
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "a": "\a", "b": "\b", "f": "\f",
               "v": "\v"}
    out, i, body = [], 0, literal[1:-1]
    while i < len(body):
        if body[i] == "\\":
            nxt = body[i + 1]
            if nxt in escapes:
                out.append(escapes[nxt])
                i += 2
            elif nxt in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[nxt]
                out.append(chr(int(body[i + 2:i + 2 + width], 16)))
                i += 2 + width
            else:
                raise GoTemplateError(f"unknown escape \\{nxt} in {literal}")
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


# --------------------------------------------------------------------------- execution

def truth(value) -> bool:
    """Go's truth: false, 0, "", nil and empty lists or maps are false."""
    return not (value is None or value is False or value == 0 and not isinstance(value, bool)
                or (isinstance(value, (str, list, tuple, dict)) and len(value) == 0))


def _text(value) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise GoTemplateError(f"printing a {type(value).__name__} is not supported")
    return str(value)


def _lookup(scopes, name):
    for scope in reversed(scopes):
        if name in scope:
            return scope[name]
    raise GoTemplateError(f"undefined variable {name}")


def _assign(scopes, name, value):
    for scope in reversed(scopes):
        if name in scope:
            scope[name] = value
            return
    raise GoTemplateError(f"undefined variable {name}")


def _field(value, name):
    if not isinstance(value, dict) or name not in value:
        raise GoTemplateError(f"can't evaluate field {name} in {type(value).__name__}")
    return value[name]


def _category(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    raise GoTemplateError(f"cannot compare a {type(value).__name__}")


def _eq(a, *others):
    if not others:
        raise GoTemplateError("eq needs two arguments")
    for b in others:
        if _category(a) != _category(b):
            raise GoTemplateError(f"incompatible types for comparison: {a!r} and {b!r}")
        if a == b:
            return True
    return False


def _index(value, *keys):
    for key in keys:
        if isinstance(value, (list, tuple)):
            if not isinstance(key, int) or not 0 <= key < len(value):
                raise GoTemplateError(f"index out of range: {key}")
            value = value[key]
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            raise GoTemplateError(f"can't index {type(value).__name__}")
    return value


def _slice(value, *bounds):
    """Go's slice; on a string it cuts bytes, as Go does."""
    length = len(value.encode("utf-8")) if isinstance(value, str) else len(value)
    start = bounds[0] if bounds else 0
    stop = bounds[1] if len(bounds) > 1 else length
    if not 0 <= start <= stop <= length:
        raise GoTemplateError(f"slice bounds out of range [{start}:{stop}]")
    if isinstance(value, str):
        return value.encode("utf-8")[start:stop].decode("utf-8", errors="replace")
    return value[start:stop]


FUNCTIONS = {"not": lambda x: not truth(x), "eq": _eq, "ne": lambda a, b: not _eq(a, b),
             "len": lambda x: len(x.encode("utf-8")) if isinstance(x, str) else len(x),  # Go counts a string's bytes
             "index": _index, "slice": _slice}


def _evaluate(operand, dot, scopes, root):
    kind = operand[0]
    if kind == "lit":
        return operand[1]
    if kind == "dot":
        return dot
    if kind == "var":
        return _lookup(scopes, operand[1])
    if kind == "fields":
        value = _evaluate(operand[1], dot, scopes, root)
        for name in operand[2]:
            value = _field(value, name)
        return value
    if kind == "pipe":
        return _pipeline(operand[1], dot, scopes, root)
    if kind == "func":
        raise GoTemplateError(f"function {operand[1]} used as a value")
    raise GoTemplateError(f"cannot evaluate {operand!r}")


def _command(command, dot, scopes, root, piped=()):
    head = command[0]
    if head[0] != "func":
        if len(command) > 1 or piped:
            raise GoTemplateError("only a function takes arguments")
        return _evaluate(head, dot, scopes, root)
    name, args = head[1], command[1:]
    if name in ("and", "or"):  # short-circuit: later arguments are not evaluated once the answer is known
        value = None
        for arg in [*args, *[("lit", p) for p in piped]]:
            value = _evaluate(arg, dot, scopes, root)
            if truth(value) == (name == "or"):
                return value
        return value
    if name not in FUNCTIONS:
        raise GoTemplateError(f'function "{name}" not defined')
    return FUNCTIONS[name](*[_evaluate(a, dot, scopes, root) for a in args], *piped)


def _pipeline(pipeline, dot, scopes, root):
    _, _, commands = pipeline
    value = _command(commands[0], dot, scopes, root)
    for command in commands[1:]:
        value = _command(command, dot, scopes, root, piped=(value,))
    return value


def _run_pipeline(pipeline, dot, scopes, root):
    """Evaluate, and declare or assign its variable; returns (value, prints)."""
    mode, variable, _ = pipeline
    value = _pipeline(pipeline, dot, scopes, root)
    if mode == "decl":
        scopes[-1][variable] = value
    elif mode == "assign":
        _assign(scopes, variable, value)
    return value, mode is None


def _execute(nodes, dot, scopes, root):
    out = []
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "action":
            value, prints = _run_pipeline(node.value, dot, scopes, root)
            if prints:
                out.append(_text(value))
        elif node.kind in ("if", "with"):
            scopes.append({})
            value, _ = _run_pipeline(node.value, dot, scopes, root)
            if truth(value):
                out += _execute(node.body, value if node.kind == "with" else dot, scopes, root)
            else:
                out += _execute(node.orelse, dot, scopes, root)
            scopes.pop()
        elif node.kind == "range":
            scopes.append({})
            items, _ = _run_pipeline(node.value, dot, scopes, root)
            if isinstance(items, dict):
                items = [(k, items[k]) for k in sorted(items)]
            elif isinstance(items, (list, tuple)):
                items = list(enumerate(items))
            elif items is None:
                items = []
            else:
                raise GoTemplateError(f"range can't iterate over {items!r}")
            for key, item in items:
                scope = {}
                if len(node.variables) == 1:
                    scope[node.variables[0]] = item
                elif len(node.variables) == 2:
                    scope[node.variables[0]], scope[node.variables[1]] = key, item
                scopes.append(scope)
                out += _execute(node.body, item, scopes, root)
                scopes.pop()
            if not items:
                out += _execute(node.orelse, dot, scopes, root)
            scopes.pop()
    return out
