"""Chat templates, copied verbatim from the models' own tokenizer_config.json.

The tiny test models speak these formats, so what passes on the tiny model holds for the real one.
Label masks never parse these strings: they come from rendering the template (see labels.py).
"""

# deepseek-ai/deepseek-llm-7b-chat. Note the generation prompt is "Assistant:" with no space; the
# space before the reply belongs to the reply, so it is trained (the model must produce it).
DEEPSEEK_LLM_CHAT = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct (the 3.1/3.2 templates add tool and date headers around the same turns).
LLAMA3_INSTRUCT = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Special tokens of each format, as the real tokenizers name them.
SPECIAL_TOKENS = {
    "deepseek": {
        "bos": "<｜begin▁of▁sentence｜>",
        "eos": "<｜end▁of▁sentence｜>",
        "pad": "<｜▁pad▁｜>",
        "extra": [],
        "template": DEEPSEEK_LLM_CHAT,
    },
    "llama3": {
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "pad": "<|finetune_right_pad_id|>",
        "extra": ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"],
        "template": LLAMA3_INSTRUCT,
    },
}
