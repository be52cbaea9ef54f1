"""After training: the base model's reply beside the tuned one for a few held-out prompts."""
import torch


@torch.no_grad()
def generate_reply(model, tokenizer, messages, max_new_tokens: int) -> str:
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(next(model.parameters()).device)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def compare_replies(model, tokenizer, conversations, max_new_tokens: int) -> list[dict]:
    """For each conversation, reply to everything before its last assistant turn, without and with LoRA."""
    rows = []
    for conversation in conversations:
        messages = conversation.messages
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = messages[:last]
        with model.disable_adapter():  # the same weights with LoRA switched off: the base model
            base = generate_reply(model, tokenizer, prompt, max_new_tokens)
        tuned = generate_reply(model, tokenizer, prompt, max_new_tokens)
        rows.append({"prompt": prompt[-1]["content"], "reference": messages[last]["content"], "base": base, "tuned": tuned})
        print(f"--- prompt:    {prompt[-1]['content']}\n    reference: {messages[last]['content']}\n"
              f"    base:      {base}\n    tuned:     {tuned}")
    return rows
