"""Our own greedy parity check of the GGUF files against the merged model in transformers (--verify).

Both sides render the run's held-out conversations with their own copy of the chat template (transformers'
apply_chat_template; the template in the GGUF's metadata, rendered by llama-cpp-python) and decode greedily.
"""
import os
from pathlib import Path

from common.errors import UserError

# transformers' logits closer than this fraction of the largest logit are a tie (see is_tie). llama.cpp's f16
# and transformers differ by about 5e-4 of it on the tiny models (llama.cpp rounds activations to 16 bits).
TIE = 2e-3


def prompts_from(eval_file: Path, n: int) -> list[list[dict]]:
    """The first n conversations of eval_file that have an assistant reply, each cut before its last one (so it
    ends where the model answers)."""
    from common.data import load_conversations
    prompts = []
    for conversation in load_conversations(eval_file).conversations:
        messages = conversation.messages
        replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if replies and len(prompts) < n:
            prompts.append(messages[: replies[-1]])
    if not prompts:
        raise UserError(f"{eval_file}: no conversation with an assistant reply to compare on")
    return prompts


def transformers_greedy(model, tokenizer, conversations, max_new_tokens, chat_options=None):
    """[(prompt ids, greedy reply, the reply's logits)] with transformers, rendered by the tokenizer's chat template
    (given `chat_options`: what training passed it, enable_thinking)."""
    import torch
    rows = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                             **(chat_options or {}))
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True)
        logits = torch.cat(out.logits).float().cpu().numpy()
        rows.append((ids[0].tolist(), out.sequences[0, ids.shape[1]:].tolist(), logits))
    return rows


def is_tie(logits, chosen: int, other: int) -> bool:
    """Two tokens whose logits are closer than 16-bit arithmetic can tell apart (0.2% of the largest logit):
    either is a correct greedy choice, and two correct implementations may pick differently."""
    return float(logits[chosen] - logits[other]) <= TIE * float(abs(logits).max())


def llama_cpp_parity(gguf_file: Path, conversations, reference, max_new_tokens, chat_options=None) -> dict:
    """Load the GGUF with llama.cpp, render each conversation with the chat template in its metadata, and compare
    with transformers' `reference` [(prompt ids, greedy reply, its logits)]:
      prompt_ids_match  the two tokenizers gave the same prompt ids
      agree / total     on transformers' reply, llama.cpp's top token is transformers' greedy token
      ties              where it is not, but transformers' two logits are a tie (is_tie): not a disagreement
      identical         llama.cpp's own greedy reply is transformers' token for token
      identical_to_tie  ... or differs first where transformers' logits have a tie"""
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    longest = max(len(p) + len(r) for p, r, _ in reference) + max_new_tokens
    llm = Llama(str(gguf_file), n_ctx=max(2048, longest), n_threads=os.cpu_count() or 1, logits_all=True,
                verbose=False)
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise UserError(f"{gguf_file}: no tokenizer.chat_template in the GGUF metadata")
    eos = llm.token_eos()
    text_of = lambda token: llm.detokenize([token], special=True).decode("utf-8")
    formatter = Jinja2ChatFormatter(template, eos_token=text_of(eos), bos_token=text_of(llm.token_bos()))
    result = dict.fromkeys(["prompts", "prompt_ids_match", "agree", "ties", "total", "identical",
                            "identical_to_tie"], 0)
    for messages, (hf_prompt, hf_reply, hf_logits) in zip(conversations, reference):
        prompt = llm.tokenize(formatter(messages=messages, **(chat_options or {})).prompt.encode("utf-8"),
                              add_bos=False, special=True)
        result["prompts"] += 1
        result["prompt_ids_match"] += prompt == hf_prompt
        # Next-token agreement: one pass over transformers' prompt and reply, argmax at each reply position.
        llm.reset()
        llm.eval(hf_prompt + hf_reply)
        choices = np.argmax(llm.scores[len(hf_prompt) - 1: len(hf_prompt) + len(hf_reply) - 1], axis=-1)
        ties = {i for i, (c, t) in enumerate(zip(choices, hf_reply)) if c != t and is_tie(hf_logits[i], t, c)}
        result["agree"] += int(sum(int(c) == t for c, t in zip(choices, hf_reply)))
        result["ties"] += len(ties)
        result["total"] += len(hf_reply)
        # Free-running greedy decoding from llama.cpp's own prompt ids.
        llm.reset()
        llm.eval(prompt)
        own = []
        for _ in range(max_new_tokens):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            own.append(token)
            if token == eos:
                break
            llm.eval([token])
        first_difference = next((i for i, (a, b) in enumerate(zip(own, hf_reply)) if a != b), None)
        result["identical"] += own == hf_reply
        result["identical_to_tie"] += own != hf_reply and prompt == hf_prompt and first_difference in ties
    llm.close()
    return result


def verify(merged_dir: Path, tokenizer, gguf_files: dict[str, Path], eval_file: Path, max_new_tokens: int = 32,
           n_conversations: int = 5, chat_options=None) -> dict:
    """Parity of each GGUF with the merged model in transformers (`tokenizer`: merged16's, as load_tokenizer loads
    it) on eval_file, printed one line per quant type. Both sides render with `chat_options` (the run's
    enable_thinking)."""
    import torch
    from transformers import AutoModelForCausalLM

    conversations = prompts_from(eval_file, n_conversations)
    print(f"parity: {len(conversations)} held-out conversations from {eval_file}")
    # On a CPU the 16-bit weights are computed in float32; on a GPU in their own 16-bit type.
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto" if on_gpu else torch.float32,
                                                 device_map="auto" if on_gpu else None).eval()
    reference = transformers_greedy(model, tokenizer, conversations, max_new_tokens, chat_options)
    del model  # its memory, before llama.cpp loads the GGUFs
    results = {}
    for quant, path in gguf_files.items():
        r = llama_cpp_parity(path, conversations, reference, max_new_tokens, chat_options)
        results[quant] = r
        print(f"parity {quant}: prompt ids match {r['prompt_ids_match']}/{r['prompts']}; next-token agreement "
              f"{r['agree']}/{r['total']} ({100 * r['agree'] / max(r['total'], 1):.1f}%), ties {r['ties']}, "
              f"disagreements {r['total'] - r['agree'] - r['ties']}; greedy replies identical "
              f"{r['identical']}/{r['prompts']}, identical up to a tie {r['identical_to_tie']}")
    return results
