"""`--model tiny` for the vision recipe: a small random-weight Llama-3.2-Vision (Mllama) and its processor.

Built offline in seconds: MllamaForConditionalGeneration with 2 text layers (one of them a cross-attention
layer, as every 5th layer is in the 11B model), a 2+1-layer vision encoder on 56-pixel tiles, and an
MllamaProcessor: MllamaImageProcessor plus the tiny SentencePiece tokenizer of common/tiny/llama.py (trained
here on the bundled text and vision data) with the Llama-3.2-Vision chat template and its <|image|> token.
Like the real model, <|image|> is an added token after the base vocabulary. Deterministic and cached next to
the text tiny models (TINY_MODEL_CACHE moves them).
"""
import json
import os
from pathlib import Path

from common.tiny import llama
from common.tiny.cache import build_once, cache_key, cache_root
from common.tiny.chat_templates import SPECIAL_TOKENS
from common.tiny.llama import PROJECT_ROOT, corpus, strings, train_sentencepiece, write_tokenizer
from common.vision import IMAGE_TOKEN

BUILDER_VERSION = "1"  # bump when anything below changes what gets built
VISION_CORPUS_FILES = ["datasets/vision/train.jsonl"]
TEXT_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, cross_attention_layers=[1], max_position_embeddings=2048,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=0.1)
VISION_SHAPE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
                    image_size=56, patch_size=14, max_num_tiles=1, supported_aspect_ratios=[[1, 1]],
                    intermediate_layers_indices=[0], vision_output_dim=64)  # 32 x (1 intermediate + final)

# The message part of meta-llama/Llama-3.2-11B-Vision-Instruct's chat template (its tool-calling branches left out):
# images become <|image|> where they stand in the content; with an image there is no system header, and a
# system message is refused; without one it writes the usual Llama-3.1 system header with today's date.
LLAMA32_VISION_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now(\"%d %b %Y\") %}{%- else %}{%- set date_string = \"26 Jul 2024\" %}"
    "{%- endif %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}"
    "{%- set image_ns = namespace(has_images=false) %}"
    "{%- for message in messages %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{%- set image_ns.has_images = true %}{%- endif %}"
    "{%- endfor %}{%- endfor %}"
    "{%- if image_ns.has_images and not system_message == \"\" %}"
    "{{- raise_exception(\"Prompting with images is incompatible with system messages.\") }}{%- endif %}"
    "{%- if not image_ns.has_images %}"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}"
    "{{- \"Today Date: \" + date_string + \"\\n\\n\" }}"
    "{{- system_message }}{{- \"<|eot_id|>\" }}{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}{%- else %}"
    "{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def _vision_corpus() -> list[str]:
    texts = []
    for rel in VISION_CORPUS_FILES:
        path = PROJECT_ROOT / rel
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    texts.extend(s for s in strings(json.loads(line)) if not s.endswith(".png") and s not in
                                 ("image", "text", "user", "assistant"))
    return texts


def tiny_vision_model_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) and return the directory of the tiny Mllama model and its processor."""
    texts = corpus() + _vision_corpus()
    # The tokenizer is common/tiny/llama.py's, built with Llama-3's special tokens: that file and those tokens are
    # inputs too.
    key = cache_key(BUILDER_VERSION, TEXT_SHAPE, VISION_SHAPE, LLAMA32_VISION_TEMPLATE, SPECIAL_TOKENS["llama3"],
                    IMAGE_TOKEN, texts, files=[__file__, llama.__file__])
    root = cache_root(cache_dir)
    directory = root / f"tiny-mllama-{key}"

    def build(staging: Path):
        import torch
        from transformers import (AutoTokenizer, MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor,
                                  MllamaProcessor)

        write_tokenizer(staging, train_sentencepiece(texts, "llama3"), "llama3")
        tokenizer = AutoTokenizer.from_pretrained(staging)
        tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS["llama3"]["extra"] + [IMAGE_TOKEN]})
        tokenizer.chat_template = LLAMA32_VISION_TEMPLATE
        image_processor = MllamaImageProcessor(size={"height": VISION_SHAPE["image_size"],
                                                     "width": VISION_SHAPE["image_size"]},
                                               max_image_tiles=VISION_SHAPE["max_num_tiles"])
        processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    chat_template=LLAMA32_VISION_TEMPLATE)
        # tokenizer.json holds the whole vocabulary; the SentencePiece file lacks <|image|>, so it would disagree.
        (staging / "tokenizer.model").unlink(missing_ok=True)
        processor.save_pretrained(staging)

        config = MllamaConfig(
            vision_config=dict(**VISION_SHAPE),
            text_config=dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TEXT_SHAPE),
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), torch_dtype="float32")
        torch.manual_seed(0)
        model = MllamaForConditionalGeneration(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(staging)

    return build_once(directory, build)
