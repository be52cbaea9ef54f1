"""Loading the three formats, and a clear error (file, line, field, what to do) for every bad input."""
import json
from pathlib import Path

import pytest

from common.data import DataError, load_conversations, to_messages
from conftest import ROOT, run

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_three_formats_normalise_to_the_same_messages(tmp_path):
    openai = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                           {"role": "assistant", "content": "A"}]}
    sharegpt = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                                  {"from": "gpt", "value": "A"}]}
    instruction = {"system": "S", "instruction": "Q", "response": "A"}
    data = load_conversations(write_jsonl(tmp_path / "mixed.jsonl", [openai, sharegpt, instruction]))
    assert [c.messages for c in data.conversations] == [openai["messages"]] * 3
    assert [c.line for c in data.conversations] == [1, 2, 3]


def test_instruction_input_and_output(tmp_path):
    rows = [{"instruction": "Translate", "input": "你好", "output": "Hello"}]
    (tmp_path / "a.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    messages = load_conversations(tmp_path / "a.json").conversations[0].messages
    assert messages == [{"role": "user", "content": "Translate\n\n你好"}, {"role": "assistant", "content": "Hello"}]


def test_json_array_records_know_their_lines(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "c", "output": ""}\n]\n')
    with pytest.raises(DataError) as err:
        load_conversations(path)
    assert (err.value.line, err.value.field) == (4, "output")


def test_bundled_data_loads():
    for name in ("chat_multiturn/train.jsonl", "chat_multiturn/test.jsonl", "samples/sharegpt.jsonl",
                 "samples/instructions.json", "instructions/train.jsonl"):
        assert load_conversations(ROOT / "datasets" / name).conversations


BAD_ROWS = {
    "not_json": ('{"messages": [', None, "not JSON"),
    "unknown_format": ({"prompt": "hi", "answer": "yo"}, None, "none of the known formats"),
    "unknown_role": ({"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]},
                     "messages[1].role", "unknown role 'bot'"),
    "unknown_sharegpt_role": ({"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "yo"}]},
                              "conversations[1].from", "unknown role 'robot'; use system, human or gpt"),
    "empty_content": ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
                      "messages[1].content", "content is empty"),
    "content_not_string": ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "yo"}]},
                           "messages[0].content", "content must be a string, got int"),
    "content_part_not_text": ({"messages": [{"role": "user", "content": ["hi"]},
                                            {"role": "assistant", "content": "yo"}]},
                              "messages[0].content[0]", 'a content part must be {"type": "text"'),
    "image_part": ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}}]},
                                 {"role": "assistant", "content": "yo"}]},
                   "messages[0].content[0]", "for images use recipes/llama_vision.py"),
    "tool_call": ({"messages": [{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
                  "messages[1]", "tool calls and tool results are not supported"),
    "tool_role": ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"},
                                {"role": "assistant", "content": "yo"}]},
                  "messages[1]", "tool calls and tool results are not supported"),
    "lone_surrogate": ('{"messages": [{"role": "user", "content": "hi \\ud800 there"}, '
                       '{"role": "assistant", "content": "yo"}]}',
                       "messages[0].content", "is a lone surrogate"),
    "think_close_in_reasoning_content": ({"messages": [{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "reasoning_content": "a\n</think>\nb",
                                                        "content": "yo"}]},
                                         "messages[1].reasoning_content", "has a </think> in it, which would end the "
                                                                          "reasoning there"),
    "reasoning_on_user_turn": ({"messages": [{"role": "user", "content": "hi", "reasoning_content": "hmm"},
                                             {"role": "assistant", "content": "yo"}]},
                               "messages[0].reasoning_content", "a 'user' turn has no reasoning (it would be dropped)"),
    "reasoning_on_sharegpt_human_turn": ({"conversations": [{"from": "human", "value": "hi", "reasoning_content": "x"},
                                                            {"from": "gpt", "value": "yo"}]},
                                         "conversations[0].reasoning_content", "move it to the assistant turn"),
    "missing_content": ({"messages": [{"role": "user"}, {"role": "assistant", "content": "yo"}]},
                        "messages[0].content", "content must be a string, got NoneType"),
    "no_assistant": ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
                     "messages", "no assistant turn"),
    "same_role_twice": ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                      {"role": "assistant", "content": "c"}]},
                        "messages[1]", "two 'user' turns in a row"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_line_and_field(tmp_path, case):
    row, field, message = BAD_ROWS[case]
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, GOOD, row, GOOD])
    with pytest.raises(DataError) as err:
        load_conversations(path)
    assert err.value.path == str(path) and err.value.line == 3 and err.value.field == field
    assert message in str(err.value)
    assert str(err.value).startswith(f"{path}:3: ")
    # --skip-bad-rows: the other rows load, the bad one is counted
    data = load_conversations(path, skip_bad_rows=True)
    assert len(data.conversations) == 3 and [e.line for e in data.skipped] == [3]


def test_same_role_twice_says_it_is_refused_not_merged(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [BAD_ROWS["same_role_twice"][0]])
    with pytest.raises(DataError, match="not merged"):
        load_conversations(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        load_conversations(tmp_path / "nope.jsonl")
    assert err.value.path == str(tmp_path / "nope.jsonl")


def test_not_utf8(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps({"messages": [
        {"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}]},
        ensure_ascii=False).encode("gbk") + b"\n")
    with pytest.raises(DataError, match="not UTF-8") as err:
        load_conversations(path)
    assert err.value.line == 2
    assert len(load_conversations(path, skip_bad_rows=True).conversations) == 1
    whole = tmp_path / "gbk.json"
    whole.write_bytes(b'[\n{"instruction": "a", "output": "b"},\n{"instruction": "' + "好".encode("gbk")
                      + b'", "output": "c"}\n]')
    with pytest.raises(DataError, match="not UTF-8") as err:
        load_conversations(whole)
    assert err.value.line == 3


def test_cli_error_is_one_line_exit_2_no_traceback(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, BAD_ROWS["unknown_role"][0]])
    result = run(["scripts/show_labels.py", path, "--model", "tiny"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {path}:2: messages[1].role: unknown role 'bot'" in result.stderr
    result = run(["scripts/show_labels.py", tmp_path / "missing.jsonl", "--model", "tiny"])
    assert result.returncode == 2 and "Traceback" not in result.stderr and "not found" in result.stderr


def test_cli_skip_bad_rows_counts(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, "not json", BAD_ROWS["no_assistant"][0], GOOD])
    result = run(["scripts/show_labels.py", path, "--model", "tiny", "--skip-bad-rows"])
    assert result.returncode == 0, result.stderr
    assert "2 rows -> 2 examples" in result.stdout and "2 bad rows skipped" in result.stdout


def test_guanaco_text_becomes_turns(tmp_path):
    text = ("### Human: 你好？### Assistant: 你好！有什么可以帮你？"
            "### Human: Tell me about LoRA.### Assistant: It adds low-rank updates.")
    data = load_conversations(write_jsonl(tmp_path / "g.jsonl", [{"text": text}]))
    assert data.conversations[0].messages == [
        {"role": "user", "content": "你好？"}, {"role": "assistant", "content": "你好！有什么可以帮你？"},
        {"role": "user", "content": "Tell me about LoRA."},
        {"role": "assistant", "content": "It adds low-rank updates."}]
    assert len(load_conversations(ROOT / "datasets" / "guanaco_style" / "train.jsonl").conversations) == 120


def test_guanaco_errors_name_the_turn(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [GOOD, {"text": "### Human: hi### Assistant:   "}])
    with pytest.raises(DataError, match="content is empty") as err:
        load_conversations(path)
    assert (err.value.line, err.value.field) == (2, "text (turn 2, Assistant)")
    path = write_jsonl(tmp_path / "h.jsonl", [{"text": "### Human: a### Human: b### Assistant: c"}])
    with pytest.raises(DataError, match="two 'user' turns in a row"):
        load_conversations(path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    assert load_conversations(path).conversations[0].messages == GOOD["messages"]


def test_utf16_is_named_with_the_command_that_converts_it(tmp_path):
    path = tmp_path / "u16.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\n").encode("utf-16"))
    with pytest.raises(DataError, match=r"u16.jsonl: is UTF-16 text, not UTF-8; convert it: iconv -f UTF-16 -t UTF-8 "):
        load_conversations(path)


def test_an_empty_file_says_empty_not_missing(tmp_path):
    for path in (Path("/dev/null"), tmp_path / "empty.jsonl"):
        if path.name == "empty.jsonl":
            path.write_text("\n \n")
        with pytest.raises(DataError, match="is empty"):
            load_conversations(path)


def test_an_unreadable_file_is_a_clear_error(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "locked.jsonl", [GOOD])
    def denied(self):  # tests run as root, where chmod 000 does not stop reading: make the read fail as it would
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"locked.jsonl: cannot be read: permission denied \(chmod a\+r "):
        load_conversations(path)


def test_deeply_nested_json_is_refused_with_its_line(tmp_path):
    for name, text in (("deep.jsonl", json.dumps(GOOD) + "\n" + "[" * 200_000 + "\n"),
                       ("deep.json", "[" + json.dumps(GOOD) + ",\n" + "[" * 200_000 + "]")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataError, match=rf"{name}:2: .*nested too deeply"):
            load_conversations(path)


def test_content_parts_are_joined():
    record = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]},
                           {"role": "assistant", "content": "c"}]}
    assert to_messages(record, "x.jsonl", 1)[0] == {"role": "user", "content": "a b"}


def test_reasoning_content_comes_apart_and_the_content_stays_as_written():
    """reasoning_content is reasoning whatever the template; reasoning written into the content is left there: it
    is reasoning only for a template that renders reasoning (labels.reasoning_apart, tests/test_labels.py)."""
    api = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "reasoning_content": "\nAdd them.\n", "content": "4"}]}
    assert to_messages(api, "x.jsonl", 1)[1] == {"role": "assistant", "content": "4", "reasoning": "Add them."}
    for content in ("<think>\nAdd them.\n</think>\n\n4", "17 + 20 = 37, + 5 = 42.\n</think>\n\n42.",
                    "Type </think> to close it.", "<think> opens a block.", "I use <think> tags."):
        record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}]}
        assert to_messages(record, "x.jsonl", 1)[1] == {"role": "assistant", "content": content}
    empty_fields = {"messages": [{"role": "user", "content": "q", "reasoning_content": None},
                                 {"role": "assistant", "content": "a", "reasoning_content": ""}]}
    assert to_messages(empty_fields, "x.jsonl", 1) == [{"role": "user", "content": "q"},  # exports that write the
                                                       {"role": "assistant", "content": "a"}]  # field on every turn


def test_held_out_conversations_that_are_also_trained_are_warned_about(tmp_path):
    from common.data import held_out_overlap
    train = load_conversations(ROOT / "datasets/chat_multiturn/train.jsonl")
    held_out = load_conversations(ROOT / "datasets/chat_multiturn/test.jsonl")
    assert held_out_overlap(train, held_out) is None  # the bundled split is clean
    same = held_out_overlap(train, train)
    assert same.startswith(f"warning: {len(train.conversations)} of {len(train.conversations)} eval conversations")
    leaky = tmp_path / "leaky.jsonl"  # two training rows slipped into a held-out file
    rows = (ROOT / "datasets/chat_multiturn/train.jsonl").read_text(encoding="utf-8").splitlines()[:2]
    leaky.write_text("\n".join((ROOT / "datasets/chat_multiturn/test.jsonl").read_text(encoding="utf-8")
                               .splitlines()[:3] + rows) + "\n", encoding="utf-8")
    assert held_out_overlap(train, load_conversations(leaky)).startswith("warning: 2 of 5 eval conversations")
