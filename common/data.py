"""Load chat data from JSONL or JSON and normalise it to OpenAI-style messages.

Four record formats are understood, one per line of a .jsonl file or one per element of a .json array:
  OpenAI     {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
  ShareGPT   {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}
  instruction{"instruction": "...", "input": "..." (optional), "response" or "output": "...", "system": optional}
  Guanaco    {"text": "### Human: ...### Assistant: ...### Human: ...### Assistant: ..."} (openassistant-guanaco)
An OpenAI content may also be a list of {"type": "text", "text": ...} parts (joined). Reasoning, for reasoning models
(DeepSeek-R1-Distill, Qwen3), comes as DeepSeek's API returns it, a "reasoning_content" field on an assistant
message, kept apart as {"role", "content", "reasoning"}; a </think> inside it, or reasoning_content on a turn that is
not the assistant's, is refused: the reasoning would end early, or be dropped. Reasoning written into the content
("<think>...</think>" at its start, or R1's raw completion "REASONING\n</think>\n\nANSWER") is left in the content
here: it is reasoning only for a chat template that renders reasoning, and labels.py takes it apart there; for any
other template it is text, trained verbatim.
Every problem is a DataError naming the file, the 1-based line and the field, and saying what to do.
Two turns in a row by the same role are refused, not merged: merging would silently change what is trained.
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
ROLES = ("system", "user", "assistant")
TOOL_ROLES = ("tool", "function", "ipython")
GUANACO_MARKER = re.compile(r"### (Human|Assistant):")
THINK_CLOSE = "</think>"


class DataError(UserError):
    def __init__(self, path, line, field_name, message):
        self.path, self.line, self.field, self.message = str(path), line, field_name, message
        where = self.path + (f":{line}" if line else "") + (f": {field_name}" if field_name else "")
        super().__init__(f"{where}: {message}")


@dataclass
class Conversation:
    messages: list[dict]
    line: int  # 1-based line of the record in its file, for messages that point back at it


@dataclass
class LoadedData:
    conversations: list[Conversation]
    skipped: list[DataError] = field(default_factory=list)  # rows dropped by skip_bad_rows


def read_bytes(path) -> bytes:
    """The file's bytes, or a DataError saying why it cannot be read. A UTF-8 byte-order mark is dropped (Windows
    editors write one); UTF-16, which they also write, is refused with the command that converts it."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "not found; pass the path of a .jsonl or .json data file")
    if path.is_dir():
        raise DataError(path, None, None, "is a directory, not a file; pass the path of a .jsonl or .json data file")
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise DataError(path, None, None, f"cannot be read: permission denied (chmod a+r {path})") from None
    except OSError as err:
        raise DataError(path, None, None, f"cannot be read: {err.strerror or err}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(raw) > 1 and raw.count(b"\x00") > len(raw) // 4):
        raise DataError(path, None, None, "is UTF-16 text, not UTF-8; convert it: "
                        f"iconv -f UTF-16 -t UTF-8 {path} > {path.with_suffix('.utf8' + path.suffix)}")
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    if not raw.strip():
        raise DataError(path, None, None,
                        "is empty; it needs one JSON record per line (.jsonl) or a JSON array (.json)")
    return raw


def parse_json(text: str):
    """json.loads, with nesting too deep for Python's parser reported as a JSONDecodeError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to be a data record", text, 0) from None


def read_records(path) -> list[tuple[int, object]]:
    """(line, parsed JSON or DataError) for each record in a .jsonl or .json file."""
    path = Path(path)
    raw = read_bytes(path)
    if path.suffix.lower() == ".json":
        text = _decode_utf8(path, raw)
        stripped = text.lstrip()
        if stripped.startswith("["):
            return _json_array(path, text)
        # Not an array: a single object, or JSON Lines saved under a .json name.
        try:
            return [(1 + text[: len(text) - len(stripped)].count("\n"), parse_json(text))]
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":
                raise DataError(path, err.lineno, None, f"not JSON ({err.msg}, column {err.colno}); fix the syntax")
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line_text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            records.append((number, DataError(path, number, None, _not_utf8(err))))
            continue
        if not line_text.strip():
            continue
        try:
            records.append((number, parse_json(line_text)))
        except json.JSONDecodeError as err:
            records.append((number, DataError(
                path, number, None, f"not JSON ({err.msg}, column {err.colno}); each line must be one JSON object")))
    return records


def _decode_utf8(path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, raw[: err.start].count(b"\n") + 1, None, _not_utf8(err)) from None


def _not_utf8(err: UnicodeDecodeError) -> str:
    return (f"not UTF-8 text (byte 0x{err.object[err.start]:02x}); "
            "save the file as UTF-8 (for example: iconv -f GBK -t UTF-8 in.jsonl > out.jsonl)")


def _json_array(path, text: str) -> list[tuple[int, object]]:
    """Parse a JSON array element by element so each record knows its line."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    records = []

    def skip(pos):
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    position = skip(position)
    if position < len(text) and text[position] == "]":
        return records
    while True:
        line = text.count("\n", 0, position) + 1
        try:
            value, position = decoder.raw_decode(text, position)
        except RecursionError:
            raise DataError(path, line, None, "not JSON (nested too deeply to be a data record)") from None
        except json.JSONDecodeError as err:
            raise DataError(path, err.lineno, None,
                            f"not JSON ({err.msg}, column {err.colno}); fix the syntax") from None
        records.append((line, value))
        position = skip(position)
        if position < len(text) and text[position] == ",":
            position = skip(position + 1)
            continue
        if position < len(text) and text[position] == "]":
            return records
        raise DataError(path, text.count("\n", 0, position) + 1, None,
                        "not JSON (expected ',' or ']' between records); fix the syntax")


def to_messages(record, path, line) -> list[dict]:
    """Normalise one record of any known format to a validated list of {"role", "content"}."""
    if not isinstance(record, dict):
        raise DataError(path, line, None, f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        turns, key, role_key, content_key, roles = record["messages"], "messages", "role", "content", None
    elif "conversations" in record:
        turns, key, role_key, content_key, roles = (record["conversations"], "conversations", "from", "value",
                                                    SHAREGPT_ROLES)
    elif "instruction" in record and ("response" in record or "output" in record):
        return _instruction(record, path, line)
    elif isinstance(record.get("text"), str) and record["text"].lstrip().startswith("### Human:"):
        return _guanaco(record["text"], path, line)
    else:
        raise DataError(path, line, None,
                        "none of the known formats: expected a 'messages' list (OpenAI), a 'conversations' list "
                        "(ShareGPT), 'instruction' with 'response'/'output', or Guanaco 'text' starting with "
                        "'### Human:'; this record has keys "
                        f"{sorted(record)}")
    if not isinstance(turns, list) or not turns:
        raise DataError(path, line, key, "must be a non-empty list of turns")
    messages = []
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(path, line, where, f"each turn must be an object with '{role_key}' and '{content_key}'")
        if roles is not None and role_key not in turn and "role" in turn:  # ShareGPT files written with role/content
            role_key, content_key, roles = "role", "content", None
        role = turn.get(role_key)
        role = roles.get(role, role) if roles else role
        if role in TOOL_ROLES or turn.get("tool_calls") or turn.get("function_call"):
            raise DataError(path, line, where, "tool calls and tool results are not supported by these recipes; "
                            "remove those turns, or write the call and its result as plain user/assistant text")
        if role not in ROLES:
            allowed = "system, human or gpt" if roles else "system, user or assistant"
            raise DataError(path, line, f"{where}.{role_key}", f"unknown role {turn.get(role_key)!r}; use {allowed}")
        content = _parts_text(turn.get(content_key), path, line, f"{where}.{content_key}")
        message = {"role": role, "content": _content(content, path, line, f"{where}.{content_key}")}
        if role == "assistant":
            message = _reasoning(message, turn.get("reasoning_content"), path, line, where)
        else:
            _no_reasoning(turn, role, path, line, where)
        messages.append(message)
    check_order(messages, path, line, key)
    return messages


def _parts_text(content, path, line, where):
    """An OpenAI content given as a list of parts: its text parts joined (OpenAI's own reading of such a list)."""
    if not isinstance(content, list):
        return content
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind in ("image", "image_url", "input_image"):
            raise DataError(path, line, f"{where}[{j}]", "an image part: text recipes train on text; for images use "
                            "recipes/llama_vision.py")
        else:
            raise DataError(path, line, f"{where}[{j}]", 'a content part must be {"type": "text", "text": "..."}; '
                            "write the content as a string or a list of text parts")
    return "".join(texts)


def _reasoning(message, reasoning_content, path, line, where):
    """An assistant message's reasoning_content (DeepSeek's API field), kept apart as "reasoning". A </think> in it
    would end the reasoning there: Qwen3's template drops what follows, R1's and an inline rendering train a
    second </think>."""
    if reasoning_content is None:
        return message
    if not isinstance(reasoning_content, str):
        raise DataError(path, line, f"{where}.reasoning_content", "must be a string")
    if not reasoning_content.strip():
        return message  # an empty think block: the same as no reasoning
    _content(reasoning_content, path, line, f"{where}.reasoning_content")
    if THINK_CLOSE in reasoning_content:
        raise DataError(path, line, f"{where}.reasoning_content", "has a </think> in it, which would end the "
                        "reasoning there (the text after it is dropped or trained as a second block): "
                        "reasoning_content is the reasoning alone, without <think> tags; remove the tag, or move "
                        "what follows it into the content")
    return {**message, "reasoning": reasoning_content.strip("\n")}


def _no_reasoning(turn, role, path, line, where):
    """Only an assistant turn has reasoning: on any other turn a reasoning_content would be silently dropped."""
    value = turn.get("reasoning_content")
    if value is not None and value != "":
        raise DataError(path, line, f"{where}.reasoning_content", f"a '{role}' turn has no reasoning (it would be "
                        "dropped): move it to the assistant turn it belongs to, or remove it")


def _instruction(record, path, line):
    prompt = _content(record["instruction"], path, line, "instruction")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise DataError(path, line, "input", f"must be a string, got {type(extra).__name__}")
    if extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    answer_key = "response" if "response" in record else "output"
    messages = [{"role": "user", "content": prompt},
                {"role": "assistant", "content": _content(record[answer_key], path, line, answer_key)}]
    if record.get("system"):
        messages.insert(0, {"role": "system", "content": _content(record["system"], path, line, "system")})
    return messages


def _guanaco(text, path, line):
    """Split the source format's "### Human:" / "### Assistant:" markers into turns (the source data's own
    format, parsed once; labels never look at the text)."""
    parts = GUANACO_MARKER.split(text)[1:]  # [role, content, role, content, ...]
    messages = [{"role": "user" if role == "Human" else "assistant",
                 "content": _content(content.strip(), path, line, f"text (turn {i + 1}, {role})")}
                for i, (role, content) in enumerate(zip(parts[::2], parts[1::2]))]
    check_order(messages, path, line, "text")
    return messages


def _content(value, path, line, where):
    if not isinstance(value, str):
        raise DataError(path, line, where, f"content must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(path, line, where, "content is empty; write the text or remove the turn")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # JSON can spell a lone UTF-16 surrogate ("\ud800"); it is not text
        raise DataError(path, line, where, f"character {err.start} is a lone surrogate ({value[err.start]!r}), not "
                        "text; it usually comes from text cut in the middle of an emoji: fix or remove it") from None
    return value  # kept exactly as written, surrounding white space included


def check_order(messages, path, line, key):
    for i, message in enumerate(messages):
        if message["role"] == "system" and i != 0:
            raise DataError(path, line, f"{key}[{i}]", "a system turn may only come first")
        if i and message["role"] == messages[i - 1]["role"]:
            raise DataError(path, line, f"{key}[{i}]",
                            f"two '{message['role']}' turns in a row ({key}[{i - 1}] and {key}[{i}]); they are not "
                            "merged automatically: join them into one turn, or add the missing turn between them")
    first = 1 if messages[0]["role"] == "system" else 0
    if first < len(messages) and messages[first]["role"] != "user":
        raise DataError(path, line, f"{key}[{first}]", "the conversation must start with a user turn "
                        "(after an optional system turn)")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(path, line, key, "no assistant turn, so nothing would be trained; add the assistant's reply")


def held_out_overlap(train: LoadedData, held_out: LoadedData) -> str | None:
    """A warning when held-out conversations are training ones too (the same file given twice, a leaky split): the
    held-out loss and the replies would then measure what the model memorised, not what it learned."""
    def key(conversation):
        return json.dumps(conversation.messages, sort_keys=True, ensure_ascii=False, default=str)
    trained = {key(c) for c in train.conversations}
    shared = sum(key(c) in trained for c in held_out.conversations)
    if not shared:
        return None
    return (f"warning: {shared} of {len(held_out.conversations)} eval conversations are also training ones, so the "
            "held-out loss is not held out; give --eval-file conversations the run does not train on")


def load_conversations(path, skip_bad_rows: bool = False, parse=None) -> LoadedData:
    """All conversations in `path`. A bad row raises DataError, or with skip_bad_rows is counted and skipped.
    parse(record, path, line) makes one conversation (default: text chats; the vision recipe passes its own)."""
    parse = parse or (lambda record, path, line: Conversation(to_messages(record, path, line), line))
    loaded = LoadedData([])
    for line, record in read_records(path):
        try:
            if isinstance(record, DataError):
                raise record
            loaded.conversations.append(parse(record, path, line))
        except DataError as err:
            if not skip_bad_rows:
                raise
            loaded.skipped.append(err)
    if not loaded.conversations:
        raise DataError(path, None, None, "no usable conversations in this file"
                        + (f" ({len(loaded.skipped)} bad rows skipped; the first: {loaded.skipped[0]})"
                           if loaded.skipped else ""))
    return loaded
