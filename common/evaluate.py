"""After training: the held-out loss per assistant token, and the base model's reply beside the tuned one for a few
held-out prompts."""
import torch


@torch.no_grad()
def held_out_loss(model, examples) -> float:
    """Cross-entropy per trained token over `examples` (input_ids and labels, -100 where nothing is trained, as
    common.labels.build_dataset makes them), one example at a time: no padding and no batching, so the trained model
    in a recipe and the exported merged16 in plain transformers compute the very same sum (the export's check
    compares the two)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for example in examples:
        labels = torch.tensor([example["labels"]], device=device)
        trained = int((labels[0, 1:] != -100).sum())  # the model predicts token i+1 from tokens up to i
        if trained:
            loss = model(input_ids=torch.tensor([example["input_ids"]], device=device), labels=labels).loss
            total, count = total + float(loss) * trained, count + trained
    return total / max(count, 1)


def text_of(content) -> str:
    """A message's text: the string, or its text parts joined (vision messages)."""
    return content if isinstance(content, str) else " ".join(p["text"] for p in content if p["type"] == "text")


@torch.no_grad()
def generate_reply(model, tokenizer, messages, max_new_tokens: int, processor=None, images=(),
                   chat_options=None) -> str:
    """Greedy reply to `messages`, rendered by the chat template with its generation prompt (and `chat_options`, what
    training passed it: enable_thinking). With a processor (vision models), its chat template renders and `images`
    (loaded: PIL images) go with the text."""
    prompt = (processor or tokenizer).apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                          **(chat_options or {}))
    if processor is not None:
        inputs = processor(images=[list(images)], text=[prompt], add_special_tokens=False, return_tensors="pt")
    else:
        inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    inputs = inputs.to(next(model.parameters()).device)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def compare_replies(model, tokenizer, conversations, max_new_tokens: int, processor=None,
                    load_images=None, chat_options=None) -> list[dict]:
    """For each conversation, reply to everything before its last assistant turn, without and with LoRA. Vision
    models: `processor` and `load_images` (common.vision.load_images: image paths -> images)."""
    rows = []
    for conversation in conversations:
        messages = conversation.messages
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = messages[:last]
        images = getattr(conversation, "images", [])[: sum(isinstance(m["content"], list) and sum(
            p["type"] == "image" for p in m["content"]) for m in prompt)]
        pictures = load_images(images) if images else []
        with model.disable_adapter():  # the same weights with LoRA switched off: the base model
            base = generate_reply(model, tokenizer, prompt, max_new_tokens, processor, pictures, chat_options)
        tuned = generate_reply(model, tokenizer, prompt, max_new_tokens, processor, pictures, chat_options)
        row = {"prompt": text_of(prompt[-1]["content"]), "reference": text_of(messages[last]["content"]),
               "base": base, "tuned": tuned}
        if images:
            row = {"image": str(images[-1]), **row}
        rows.append(row)
        print((f"--- image:     {images[-1].name}\n    prompt:    " if images else "--- prompt:    ")
              + f"{row['prompt']}\n    reference: {row['reference']}\n    base:      {base}\n    tuned:     {tuned}")
    return rows
