"""The families the recipes accept, each with its real vocabulary, tokenizer_config.json and chat template
(fixtures/tokenizers, rebuilt offline from llama.cpp's vocab files): tokenizer loading, labels span by span,
R1-Distill reasoning, and a tiny random model of the real architecture through the DeepSeek recipe, the GGUF
export, the greedy parity check, and what the Ollama Modelfile feeds the model."""
import copy
import json
import math
import re
from pathlib import Path

import pytest

from common.data import load_conversations
from common.labels import build_dataset, build_examples, how_replies_train, render, trained_runs, trained_spans
from conftest import ROOT, run

ADVERSARIAL = ROOT / "tests/data/adversarial.jsonl"
REASONING = ROOT / "tests/data/reasoning.jsonl"
DEEPSEEK_EOS = "<｜end▁of▁sentence｜>"
# What the model must write for a reply, per family, written out by hand from each template.
EXPECTED = {
    "deepseek-llm-7b-chat": lambda reply: " " + reply + DEEPSEEK_EOS,  # the prompt ends "Assistant:", no space
    "llama-3.1-8b-instruct": lambda reply: reply.strip() + "<|eot_id|>",  # the template trims each message
    "llama-3.2-3b-instruct": lambda reply: reply.strip() + "<|eot_id|>",
    "deepseek-r1-distill-llama-8b": lambda reply: "\n</think>\n\n" + reply + DEEPSEEK_EOS,  # an empty think block
    "deepseek-r1-distill-qwen-1.5b": lambda reply: "\n</think>\n\n" + reply + DEEPSEEK_EOS,
    "qwen2.5-7b-instruct": lambda reply: reply + "<|im_end|>",  # the "\n" after <|im_end|> is context
    # the last turn's think block (empty without reasoning), as Qwen3's template writes it after its prompt
    "qwen3-0.6b": lambda reply: "<think>\n\n</think>\n\n" + reply.lstrip("\n") + "<|im_end|>",
    "phi-3.5-mini-instruct": lambda reply: reply + "<|end|>",  # never the <|endoftext|> that ends a conversation
}
FAMILIES = sorted(EXPECTED)
R1 = [f for f in FAMILIES if "r1-distill" in f]
PER_REPLY = {"qwen3-0.6b", "phi-3.5-mini-instruct"}  # templates that rewrite history: one example per reply
BROKEN_BY_TRANSFORMERS = {"deepseek-llm-7b-chat", "deepseek-r1-distill-llama-8b"}  # transformers#45488, from a folder


@pytest.fixture(scope="module")
def tokenizers():
    from dev.real_tokenizers import tokenizer_dir
    from common.tokenizer import load_tokenizer
    return {family: load_tokenizer(tokenizer_dir(family)) for family in FAMILIES}


def conversations(path=ADVERSARIAL):
    return load_conversations(path).conversations


def replies(messages):
    return [m["content"] for m in messages if m["role"] == "assistant"]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tokenizer_is_loaded_as_its_tokenizer_json_tokenizes(family, tokenizers, capsys):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from dev.real_tokenizers import tokenizer_dir
    from common.tokenizer import PROBE, check_tokenizer, load_tokenizer

    directory = tokenizer_dir(family)
    reference = Tokenizer.from_file(str(directory / "tokenizer.json"))
    text = "User: Hello world\n\n你好，世界！"
    as_transformers_loads_it = AutoTokenizer.from_pretrained(directory)
    broken = (as_transformers_loads_it.decode(as_transformers_loads_it(text, add_special_tokens=False)["input_ids"])
              != text)
    assert broken == (family in BROKEN_BY_TRANSFORMERS)  # the bug this guards against, as transformers 5.17 has it
    tokenizer = load_tokenizer(directory)
    said = capsys.readouterr().out
    assert ("rebuilt it from tokenizer.json" in said) == (family in BROKEN_BY_TRANSFORMERS)
    for sample in (PROBE, text, *[m["content"] for c in conversations() for m in c.messages]):
        assert (tokenizer(sample, add_special_tokens=False)["input_ids"]
                == reference.encode(sample, add_special_tokens=False).ids)
    assert ((tokenizer.bos_token, tokenizer.eos_token)
            == (as_transformers_loads_it.bos_token, as_transformers_loads_it.eos_token))
    assert tokenizer.chat_template == as_transformers_loads_it.chat_template
    checked = check_tokenizer(tokenizer, conversations(), "adversarial.jsonl")
    assert checked["conversations"] == 10 and tokenizer.eos_token in checked["markers"]
    if broken:  # the preflight catches the broken one, naming the file and line
        with pytest.raises(Exception, match=r"preflight: adversarial.jsonl:1: the tokenizer does not give back"):
            check_tokenizer(as_transformers_loads_it, conversations(), "adversarial.jsonl")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["all_turns", "last_turn", "split"])
def test_labels_span_by_span(family, layout, tokenizers):
    tokenizer, expected = tokenizers[family], EXPECTED[family]
    for conversation in conversations():
        messages = conversation.messages
        examples, dropped = build_examples(tokenizer, messages, layout)
        spans = [span for e in examples for span in trained_spans(tokenizer, e["input_ids"], e["labels"])]
        wanted = [expected(reply) for reply in replies(messages)]
        assert dropped == 0 and spans == (wanted[-1:] if layout == "last_turn" else wanted), (family, conversation.line)
        if layout == "split" or family in R1 or family in PER_REPLY:  # one reply per example: its context is
            # exactly what inference renders
            reply_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            for example, turn in zip(examples, reply_turns[-len(examples):]):
                (start, _), = trained_runs(example["labels"])
                if family in PER_REPLY:  # the prompt tokenized whole, as inference tokenizes it
                    assert example["input_ids"][:start] == tokenizer(render(tokenizer, messages[:turn], True),
                                                                     add_special_tokens=False)["input_ids"]
                else:
                    assert tokenizer.decode(example["input_ids"][:start]) == render(tokenizer, messages[:turn], True)


@pytest.mark.parametrize("family", R1)
def test_r1_trains_reasoning_after_the_inference_prompt(family, tokenizers):
    tokenizer = tokenizers[family]
    rows = conversations(REASONING)
    spans = [[span for e in build_examples(tokenizer, c.messages)[0]
              for span in trained_spans(tokenizer, e["input_ids"], e["labels"])] for c in rows]
    assert spans == [
        ["17 + 25: 17 + 20 = 37, then + 5 = 42.\n</think>\n\n42." + DEEPSEEK_EOS],  # reasoning_content
        # <think> in content
        ["阳光里波长短的蓝光被空气分子散射得最多。\n</think>\n\n因为瑞利散射：蓝光散射得最多。" + DEEPSEEK_EOS],
        ["\n</think>\n\nHello!" + DEEPSEEK_EOS],  # no reasoning: an empty think block
        ["Two threes.\n</think>\n\n6." + DEEPSEEK_EOS, "\n</think>\n\n<br> breaks a line." + DEEPSEEK_EOS],
    ]
    # the second reply's context is the history as inference renders it: the first reply without its reasoning
    second = build_examples(tokenizer, rows[3].messages)[0][1]
    (start, _), = trained_runs(second["labels"])
    context = tokenizer.decode(second["input_ids"][:start])
    assert context.endswith("<｜Assistant｜>6.<｜end▁of▁sentence｜><｜User｜>And <br> in HTML?<｜Assistant｜><think>\n")
    assert "Two threes" not in context
    plain = [span for e in build_examples(tokenizer, rows[2].messages, empty_think=False)[0]
             for span in trained_spans(tokenizer, e["input_ids"], e["labels"])]
    assert plain == ["Hello!" + DEEPSEEK_EOS]  # --no-empty-think: right after <｜Assistant｜>, as the template renders


@pytest.mark.parametrize("family", R1)
def test_show_labels_shows_what_is_trained(family):
    from dev.real_tokenizers import tokenizer_dir

    result = run(["scripts/show_labels.py", REASONING, "--model", tokenizer_dir(family), "--jsonl"])
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0]["trained_spans"] == ["17 + 25: 17 + 20 = 37, then + 5 = 42.\n</think>\n\n42." + DEEPSEEK_EOS]
    assert rows[2]["trained_spans"] == ["\n</think>\n\nHello!" + DEEPSEEK_EOS]


def spans_of(tokenizer, messages, **options):
    return [span for e in build_examples(tokenizer, messages, **options)[0]
            for span in trained_spans(tokenizer, e["input_ids"], e["labels"])]


def test_qwen3_trains_each_reply_as_inference_prompts_it_in_both_thinking_modes(tokenizers):
    tokenizer, rows = tokenizers["qwen3-0.6b"], conversations(REASONING)
    assert "drops an earlier assistant turn's think block" in how_replies_train(tokenizer, "on")
    assert [spans_of(tokenizer, c.messages) for c in rows] == [
        ["<think>\n17 + 25: 17 + 20 = 37, then + 5 = 42.\n</think>\n\n42.<|im_end|>"],  # reasoning_content
        ["<think>\n阳光里波长短的蓝光被空气分子散射得最多。\n</think>\n\n因为瑞利散射：蓝光散射得最多。<|im_end|>"],
        ["<think>\n\n</think>\n\nHello!<|im_end|>"],  # no reasoning: the empty block the template writes
        ["<think>\nTwo threes.\n</think>\n\n6.<|im_end|>", "<think>\n\n</think>\n\n<br> breaks a line.<|im_end|>"],
    ]
    assert [spans_of(tokenizer, c.messages, thinking="off") for c in rows] == [
        ["42.<|im_end|>"], ["因为瑞利散射：蓝光散射得最多。<|im_end|>"], ["Hello!<|im_end|>"],
        ["6.<|im_end|>", "<br> breaks a line.<|im_end|>"]]
    # each reply is its own example, after the prompt inference renders: history without think blocks
    for thinking, opens in (("on", "<|im_start|>assistant\n"),
                            ("off", "<|im_start|>assistant\n<think>\n\n</think>\n\n")):
        first, second = build_examples(tokenizer, rows[3].messages, thinking=thinking)[0]
        (start, _), = trained_runs(second["labels"])
        assert tokenizer.decode(second["input_ids"][:start]).endswith(
            "<|im_start|>assistant\n6.<|im_end|>\n<|im_start|>user\nAnd <br> in HTML?<|im_end|>\n" + opens)
        assert "Two threes" not in tokenizer.decode(second["input_ids"])
        stats = build_dataset(tokenizer, rows, "all_turns", 2048, thinking=thinking)[1]
        assert stats["examples"] == 5 and stats["conversations"] == 4


def test_phi35_trains_each_reply_up_to_its_end_token_never_the_endoftext(tokenizers):
    tokenizer = tokenizers["phi-3.5-mini-instruct"]
    assert "it writes '<|endoftext|>' at the end of a conversation only when nothing follows" in how_replies_train(
        tokenizer)
    messages = conversations(REASONING)[3].messages
    examples = build_examples(tokenizer, messages)[0]
    assert [trained_spans(tokenizer, e["input_ids"], e["labels"]) for e in examples] == [
        ["<think>\nTwo threes.\n</think>\n\n6.<|end|>"], ["<br> breaks a line.<|end|>"]]  # reasoning inline, as R1's
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert all(e["input_ids"][-1] == tokenizer.convert_tokens_to_ids("<|end|>") and endoftext not in e["input_ids"]
               for e in examples)


def test_r1_template_that_closes_the_think_block_when_thinking_is_off(tokenizers):
    tokenizer = copy.deepcopy(tokenizers["deepseek-r1-distill-qwen-1.5b"])
    # llama.cpp-style: with enable_thinking false the generation prompt opens and closes an empty think block
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{{'<｜Assistant｜><think>\\n'}}", "{{'<｜Assistant｜><think>\\n'}}{% if enable_thinking is defined and not "
        "enable_thinking %}{{'</think>\\n\\n'}}{% endif %}")
    rows = conversations(REASONING)
    assert render(tokenizer, rows[2].messages[:1], True, "off").endswith("<｜Assistant｜><think>\n</think>\n\n")
    assert [spans_of(tokenizer, c.messages, thinking="off") for c in rows] == [
        ["42." + DEEPSEEK_EOS], ["因为瑞利散射：蓝光散射得最多。" + DEEPSEEK_EOS], ["Hello!" + DEEPSEEK_EOS],
        ["6." + DEEPSEEK_EOS, "<br> breaks a line." + DEEPSEEK_EOS]]
    assert spans_of(tokenizer, rows[0].messages) == [  # on: as the hub's template
        "17 + 25: 17 + 20 = 37, then + 5 = 42.\n</think>\n\n42." + DEEPSEEK_EOS]


def test_what_labels_cannot_express_is_refused_in_one_line_naming_the_template_behaviour(tokenizers):
    from common.data import DataError
    from common.errors import UserError

    data = conversations()
    # Phi-3.5's template reads no enable_thinking: it has no non-thinking prompt to train after
    with pytest.raises(UserError, match=r"^--thinking off: this chat template's generation prompt does not change "
                                        r"with enable_thinking"):
        build_dataset(tokenizers["phi-3.5-mini-instruct"], data, "all_turns", 2048, thinking="off")
    # a generation prompt that adds what no reply starts with: the model would be trained after a prompt it never sees
    tokenizer = copy.deepcopy(tokenizers["qwen3-0.6b"])
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{{- '<|im_start|>assistant\\n' }}", "{{- '<|im_start|>assistant\\n<answer>' }}")
    with pytest.raises(DataError, match=r"^adversarial.jsonl:1: messages: the generation prompt '.*<answer>' is not "
                                        r"the assistant header"):
        build_dataset(tokenizer, data, "all_turns", 2048, source="adversarial.jsonl")


def rendered_by_llama_cpp_python(template: str, tokenizer, messages) -> str:
    """What llama-cpp-python renders from a GGUF's chat template, given no options (as llama.cpp and llama-server
    render it unless asked)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    return Jinja2ChatFormatter(template, eos_token=tokenizer.eos_token, bos_token=tokenizer.bos_token or "",
                               add_generation_prompt=True)(messages=messages).prompt


def test_the_gguf_template_renders_the_runs_thinking_mode_unasked(tokenizers):
    """A GGUF kept the base's chat template, whose default can be the opposite of the run's --thinking: a Qwen3
    --thinking off run's GGUF, rendered without options, prompted for thinking; an R1 template that reads
    enable_thinking and defaults to off did so under a --thinking on run. --verify and the Modelfile pass the run's
    setting, so nothing said it."""
    from common.export.gguf import thinking_by_default

    prompts = [c.messages[:-1] for c in conversations(REASONING)] + [c.messages[:1] for c in conversations()]
    qwen3 = tokenizers["qwen3-0.6b"]
    r1 = copy.deepcopy(tokenizers["deepseek-r1-distill-qwen-1.5b"])
    r1.chat_template = r1.chat_template.replace(  # undefined enable_thinking is false: off unless asked
        "{{'<｜Assistant｜><think>\\n'}}",
        "{{'<｜Assistant｜><think>\\n'}}{% if not enable_thinking %}{{'</think>\\n\\n'}}{% endif %}")
    for tokenizer, thinking in ((qwen3, False), (r1, True)):
        template = thinking_by_default(tokenizer, tokenizer.chat_template, {"enable_thinking": thinking}, prompts)
        assert template != tokenizer.chat_template
        for messages in prompts:
            trained = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                    enable_thinking=thinking)
            assert rendered_by_llama_cpp_python(template, tokenizer, messages) == trained
            assert rendered_by_llama_cpp_python(tokenizer.chat_template, tokenizer, messages) != trained  # before
        # where the default is already the run's, or the template reads no enable_thinking: the template as it is
        assert thinking_by_default(tokenizer, tokenizer.chat_template, {"enable_thinking": not thinking},
                                   prompts) == tokenizer.chat_template
    llama = tokenizers["llama-3.1-8b-instruct"]
    assert thinking_by_default(llama, llama.chat_template, {"enable_thinking": False}, prompts) == llama.chat_template


# ------------------------------------------------------------------ the DeepSeek recipe, export and parity

PARITY = re.compile(r"parity (\S+): prompt ids match (\d+)/(\d+); next-token agreement (\d+)/(\d+) \(.*?\), "
                    r"ties (\d+), disagreements (\d+); greedy replies identical (\d+)/(\d+), "
                    r"identical up to a tie (\d+)")


def ollama_feeds_what_training_rendered(run_dir: Path, family: str):
    """What Ollama feeds the model (the Modelfile's TEMPLATE, rendered by Go's rules and tokenized by llama.cpp from
    the GGUF, BOS as the GGUF says) is token for token what training fed it (the chat template, transformers)."""
    from datetime import datetime

    from llama_cpp import Llama

    from common.export.run import conversations_of
    from common.export.modelfile import PROBES, go_render, pinned_date
    from common.tokenizer import load_tokenizer

    gguf = run_dir / "export" / "gguf" / f"{family}-f16.gguf"
    modelfile = gguf.with_suffix(".Modelfile").read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    tokenizer = load_tokenizer(run_dir / "adapter")
    config = json.loads((run_dir / "run_config.json").read_text())
    date = pinned_date(tokenizer.chat_template, config,
                       datetime.fromtimestamp((run_dir / "run_config.json").stat().st_mtime))
    kwargs = {"date_string": date} if date else {}
    kwargs["enable_thinking"] = config["thinking"] == "on"  # as training passed it
    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    conversations = [c for c in conversations_of(ROOT / "datasets/chat_multiturn/test.jsonl", 8) + PROBES
                     if all(m["content"] == m["content"].strip() for m in c)]  # Llama's trim: see the Modelfile
    for messages in conversations:
        trained = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                          **kwargs), add_special_tokens=False)["input_ids"]
        # add_bos=True adds the BOS only where the GGUF says to (tokenizer.ggml.add_bos_token), as Ollama does.
        assert llm.tokenize(go_render(template, messages).encode("utf-8"), add_bos=True, special=True) == trained
    llm.close()


# Qwen3 runs without thinking: its non-thinking prompt must reach the parity check and the Modelfile from the run's
# config (with thinking on, its prompt is Qwen2.5's, which the qwen2.5 row covers).
THINKING = {"qwen3-0.6b": "off"}


@pytest.mark.parametrize("family", FAMILIES)
def test_recipe_trains_exports_and_matches_llama_cpp(family, tmp_path):
    from dev.real_tokenizers import build_tiny_family_model

    out = tmp_path / family
    # 8 held-out conversations, not 40: the held-out loss is not what is checked here, and --verify's parity takes
    # its 5 prompts from the run's eval file
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text("".join((ROOT / "datasets/chat_multiturn/test.jsonl").read_text(encoding="utf-8")
                                .splitlines(True)[:8]), encoding="utf-8")
    trained = run(["recipes/deepseek_multiturn.py", "--model", build_tiny_family_model(family), "--max-steps", "8",
                   "--learning-rate", "5e-3", "--eval-prompts", "1", "--eval-file", held_out, "--output-dir", out,
                   "--thinking", THINKING.get(family, "on")], timeout=1200)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert ("rebuilt it from tokenizer.json" in trained.stdout) == (family in BROKEN_BY_TRANSFORMERS)
    assert "conversations round-trip exactly" in trained.stdout
    losses = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert len(losses) == 8 and losses[-1] < losses[0], losses
    stats = json.loads((out / "eval.json").read_text())["train"]
    print(f"{family}: train {stats['examples']} examples, "
          f"{stats['trained_tokens']} trained of {stats['tokens']} tokens")
    exported = run(["scripts/export.py", out, "--to", "gguf", "--quant", "f16", "--verify"], timeout=1200)
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    (quant, *numbers), = PARITY.findall(exported.stdout)
    ids_ok, prompts, agree, total, ties, disagree, identical, _, identical_to_tie = map(int, numbers)
    print(f"{family}: {exported.stdout.strip().splitlines()[-1]}")
    assert quant == "f16" and ids_ok == prompts == 5, exported.stdout[-2000:]
    # A tie is where transformers' own top two logits are closer than 16-bit arithmetic resolves: either token is a
    # right greedy choice (a random model with a 150K vocabulary has many); a disagreement is not allowed.
    assert disagree == 0 and agree + ties == total and agree > total / 2, exported.stdout[-2000:]
    assert identical + identical_to_tie == prompts, exported.stdout[-2000:]
    assert "llama.cpp loads it and runs a prompt" in exported.stdout
    if family in PER_REPLY:  # the log says why there is one example per reply
        assert "the chat template rewrites history" in trained.stdout and stats["examples"] > stats["conversations"]
    if family == "qwen3-0.6b":  # the Modelfile asks as training did: after the closed empty think block
        assert "Modelfile: Qwen3, thinking off chat format" in exported.stdout
    ollama_feeds_what_training_rendered(out, family)
    llama_cpp_renders_what_training_rendered(out, family)


def llama_cpp_renders_what_training_rendered(run_dir: Path, family: str):
    """The chat template in the GGUF's own metadata, rendered without options as llama.cpp renders it, prompts as
    training did (with the run's --thinking)."""
    from llama_cpp import Llama

    from common.export.run import conversations_of
    from common.tokenizer import load_tokenizer

    llm = Llama(str(run_dir / "export" / "gguf" / f"{family}-f16.gguf"), vocab_only=True, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    llm.close()
    tokenizer = load_tokenizer(run_dir / "adapter")
    thinking = json.loads((run_dir / "run_config.json").read_text())["thinking"] == "on"
    for messages in conversations_of(ROOT / "datasets/chat_multiturn/test.jsonl", 8):
        assert rendered_by_llama_cpp_python(template, tokenizer, messages) == tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking), family


def test_adalora_schedules_the_steps_a_per_reply_template_really_trains(tmp_path):
    """R1-Distill trains each reply as its own example: AdaLoRA's total_step counts the replies, not the
    conversations, so it is the number of optimizer steps the trainer runs (counted on conversations it was 1 of 3)."""
    from dev.real_tokenizers import build_tiny_family_model

    rows = (ROOT / "datasets/chat_multiturn/train.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    replies = sum(m["role"] == "assistant" for row in rows for m in json.loads(row)["messages"])
    out = tmp_path / "run"
    result = run(["recipes/deepseek_multiturn.py", "--model", build_tiny_family_model("deepseek-r1-distill-qwen-1.5b"),
                  "--train-file", train, "--adalora", "--init-r", "4", "--target-r", "2", "--tinit", "0",
                  "--tfinal", "0", "--batch-size", "2", "--grad-accum", "4", "--max-seq-length", "256",
                  "--eval-prompts", "0", "--output-dir", out])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    total_step = json.loads((out / "adapter" / "adapter_config.json").read_text())["total_step"]
    trained = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    steps = lambda examples: math.ceil(math.ceil(examples / 2) / 4)  # batch 2, 4 accumulated, one epoch
    assert total_step == trained == steps(replies) > steps(len(rows))
