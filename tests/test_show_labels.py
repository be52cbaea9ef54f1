"""scripts/show_labels.py --jsonl: one object per input row, in input order, with each trained span."""
import json

import pytest

from common.data import load_conversations
from conftest import ROOT, run
from test_labels import ADVERSARIAL, expected_deepseek


@pytest.mark.parametrize("layout", ["all_turns", "last_turn", "split"])
def test_jsonl_spans_are_exact(layout):
    result = run(["scripts/show_labels.py", ADVERSARIAL, "--model", "tiny", "--label-layout", layout, "--jsonl"])
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    conversations = load_conversations(ADVERSARIAL).conversations
    assert [row["line"] for row in rows] == [c.line for c in conversations] == list(range(1, 11))
    for row, conversation in zip(rows, conversations):
        expected = expected_deepseek(conversation.messages)
        assert row["trained_spans"] == (expected[-1:] if layout == "last_turn" else expected)


def test_default_view_marks_the_trained_part():
    result = run(["scripts/show_labels.py", ADVERSARIAL, "--model", "tiny"])
    assert result.returncode == 0, result.stderr
    assert "⟦ Understood.<｜end▁of▁sentence｜>⟧" in result.stdout  # not a terminal: bracket marks
    assert "User: Assistant: I am not the assistant." in result.stdout  # user text unmarked
    assert "10 rows -> 10 examples [all_turns]" in result.stdout


def test_bad_model_or_settings_are_one_line_errors(tmp_path):
    bare = tmp_path / "no-template"
    from common.tiny.llama import tiny_model_path
    import shutil
    shutil.copytree(tiny_model_path("deepseek"), bare)
    config = bare / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"chat_template"', '"not_a_chat_template"'))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    for args, words in (([ADVERSARIAL, "--model", tmp_path / "nothing"], "nothing: not found (no such directory)"),
                        ([ADVERSARIAL, "--model", bare], "has no chat template"),
                        ([ADVERSARIAL, "--model", "tiny", "--max-seq-length", "-5"], "--max-seq-length -5: must be")):
        result = run(["scripts/show_labels.py", *args])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert words in result.stderr, result.stderr


def test_r1_raw_completion_trains_the_reasoning_once(tmp_path, capsys, monkeypatch):
    # R1 writes "REASONING\n</think>\n\nANSWER" after its "<think>\n" prompt; as reply text it would train an empty
    # think block, the reasoning as the reply and a second </think>
    from dev.real_tokenizers import tokenizer_dir
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from show_labels import main  # in-process: the tokenizer loads once, no second Python

    data = tmp_path / "r1.jsonl"
    data.write_text(json.dumps({"messages": [
        {"role": "user", "content": "What is 17 + 20 + 5?"},
        {"role": "assistant", "content": "17 + 20 = 37, + 5 = 42.\n</think>\n\n42."}]}) + "\n", encoding="utf-8")
    main([str(data), "--model", str(tokenizer_dir("deepseek-r1-distill-qwen-1.5b")), "--jsonl"])
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["trained_spans"] == ["17 + 20 = 37, + 5 = 42.\n</think>\n\n42.<｜end▁of▁sentence｜>"]


def test_qwen3_and_phi35_show_one_example_per_reply_in_both_thinking_modes(capsys, monkeypatch):
    from common.errors import UserError
    from dev.real_tokenizers import tokenizer_dir
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from show_labels import main  # in-process: the tokenizer loads once, no second Python

    reasoning = str(ROOT / "tests/data/reasoning.jsonl")
    qwen3 = str(tokenizer_dir("qwen3-0.6b"))
    for thinking, spans in (("on", ["<think>\nTwo threes.\n</think>\n\n6.<|im_end|>",
                                    "<think>\n\n</think>\n\n<br> breaks a line.<|im_end|>"]),
                            ("off", ["6.<|im_end|>", "<br> breaks a line.<|im_end|>"])):
        main([reasoning, "--model", qwen3, "--thinking", thinking, "--jsonl"])
        assert json.loads(capsys.readouterr().out.splitlines()[3])["trained_spans"] == spans
    main([reasoning, "--model", qwen3, "--thinking", "off"])  # the view: why, then one example per reply
    view = capsys.readouterr().out
    assert view.startswith("the chat template rewrites history: it drops an earlier assistant turn's think block")
    assert "── line 4 · example 2/2" in view and "4 rows -> 5 examples [all_turns]" in view
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n⟦<br> breaks a line.<|im_end|>⟧" in view
    main([reasoning, "--model", str(tokenizer_dir("phi-3.5-mini-instruct")), "--jsonl"])
    assert json.loads(capsys.readouterr().out.splitlines()[2])["trained_spans"] == ["Hello!<|end|>"]
    with pytest.raises(UserError, match="^--thinking off: this chat template's generation prompt does not change"):
        main([reasoning, "--model", str(tokenizer_dir("phi-3.5-mini-instruct")), "--thinking", "off"])
