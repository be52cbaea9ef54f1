"""Image chat data for the vision recipe: load and check it, build exact assistant-only labels, batch it.

One record per line of a .jsonl file (or per element of a .json array), OpenAI messages with content parts:
  {"messages": [{"role": "user", "content": [{"type": "image", "image": "images/a.png"},
                                             {"type": "text", "text": "..."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "..."}]}, ...]}
A content may also be a plain string. An image path is relative to the data file's folder (or absolute).
Every problem is a DataError naming the file, line and field: a missing image file, a file that is not an
image, an image part with no image, and what Llama 3.2 Vision's chat template cannot render.

Labels come from common/labels.py unchanged: the chat template is rendered one message at a time and only
the text each assistant message adds after the generation prompt is trained. An image part renders as
<|image|> inside a user message, so it is never trained, and neither is the prompt.
"""
from dataclasses import dataclass
from pathlib import Path

import torch

from common.data import ROLES, DataError, check_order
from common.labels import IGNORE_INDEX, TemplateError, build_examples
from common.errors import UserError
from common.preflight import check_batch, pad_batch

IMAGE_TOKEN = "<|image|>"  # Llama 3.2 Vision's; the template puts one where each image part stands
MAX_IMAGE_PIXELS = 8192 * 8192  # larger is refused: a decompression bomb, or far more than a 560-pixel tile needs


@dataclass
class VisionConversation:
    messages: list[dict]  # every content a list of {"type": "text", "text"} / {"type": "image", "image"} parts
    images: list[Path]  # the image files, in the order their parts appear
    line: int


def is_vision_record(record) -> bool:
    """A record with content parts (lists) rather than plain strings: the vision format."""
    return isinstance(record, dict) and isinstance(record.get("messages"), list) and any(
        isinstance(m, dict) and isinstance(m.get("content"), list) for m in record["messages"])


def check_image(file: Path, path, line, where: str, written: str):
    """Decode the whole image now (cheap at these sizes): a file that opens but whose pixels are corrupt or cut
    off, or a decompression bomb, must fail here with its line, not in the middle of training."""
    from PIL import Image, UnidentifiedImageError

    if not file.is_file():
        raise DataError(path, line, where, f"image file not found: {written} (looked for {file}); image paths are "
                        "relative to the data file's folder")
    try:
        with Image.open(file) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(path, line, where, f"{written} is {image.width}x{image.height} pixels, too large to "
                                "decode safely; resize it (the model sees 560-pixel tiles)")
            image.convert("RGB").load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(path, line, where, f"cannot decode {written} as an image ({type(err).__name__}: {err}); "
                        "replace it with a PNG or JPEG file") from None


def to_vision_messages(record, path, line) -> VisionConversation:
    """Validate one record and normalise every content to a list of parts."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        raise DataError(path, line, "messages", 'expected {"messages": [...]} with a non-empty list of turns, '
                        'images given as {"type": "image", "image": "path.png"} content parts')
    folder = Path(path).parent
    messages, images = [], []
    for i, turn in enumerate(record["messages"]):
        where = f"messages[{i}]"
        role = turn.get("role") if isinstance(turn, dict) else None
        if role not in ROLES:
            raise DataError(path, line, f"{where}.role", f"unknown role {role!r}; each turn is an object with "
                            "\"role\" (system, user or assistant) and \"content\"")
        content = turn.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list) or not content:
            raise DataError(path, line, f"{where}.content", "must be a string or a non-empty list of "
                            '{"type": "text", "text": ...} and {"type": "image", "image": ...} parts')
        parts = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str) or not text.strip():
                    raise DataError(path, line, f"{at}.text", "a text part needs non-empty \"text\"")
                if IMAGE_TOKEN in text:
                    raise DataError(path, line, f"{at}.text", f"the text contains {IMAGE_TOKEN}, the token that stands "
                                    "for an image, but no image goes with it; give images as image parts, not as text")
                parts.append({"type": "text", "text": text})
            elif kind == "image":
                written = part.get("image", part.get("path"))
                if not isinstance(written, str) or not written.strip():
                    raise DataError(path, line, at, 'an image part with no image: give the file as {"type": "image", '
                                    '"image": "images/name.png"} (relative to the data file)')
                if turn["role"] != "user":
                    raise DataError(path, line, at, f"an image in a {turn['role']} turn; images go in user turns "
                                    "(the model reads images, it does not write them)")
                file = Path(written) if Path(written).is_absolute() else folder / written
                check_image(file, path, line, f"{at}.image", written)
                images.append(file)
                parts.append({"type": "image", "image": written})
            else:
                raise DataError(path, line, f"{at}.type", f"unknown part type {kind!r}; use \"text\" or \"image\"")
        messages.append({"role": turn["role"], "content": parts})
    check_order(messages, path, line, "messages")
    if not images:
        raise DataError(path, line, "messages", "no image in this conversation; the vision recipe trains on image "
                        "conversations: add an image part to the first user turn "
                        "(text-only data: recipes/llama_text.py)")
    if messages[0]["role"] == "system":
        raise DataError(path, line, "messages[0]", "Llama 3.2 Vision's chat template refuses a system message in a "
                        "conversation with an image; put its text in the first user turn")
    if not any(p["type"] == "image" for p in messages[0]["content"]):
        raise DataError(path, line, "messages[0].content", "the first user turn has no image; Llama 3.2 "
                        "Vision's template renders a conversation differently once it holds an image, so the first "
                        "image must come in the first user turn")
    return VisionConversation(messages, images, line)


def label_tokenizer(processor):
    """The processor's tokenizer, rendering with the processor's chat template (the one inference uses), so
    common/labels.py can render and tokenize with a single object."""
    tokenizer = processor.tokenizer
    if getattr(processor, "chat_template", None):
        tokenizer.chat_template = processor.chat_template
    return tokenizer


def build_vision_examples(tokenizer, conversation: VisionConversation, layout: str, max_length: int | None,
                          empty_think: bool = True, thinking: str = "on"):
    """common.labels.build_examples, plus the image files each example shows (its first k images, where k is the
    number of <|image|> tokens left in it: a `split` example or a truncated one may stop before a later image)."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    examples, dropped = build_examples(tokenizer, conversation.messages, layout, max_length, empty_think, thinking)
    for example in examples:
        if image_id in [label for label in example["labels"] if label != IGNORE_INDEX]:
            raise TemplateError(f"an {IMAGE_TOKEN} token would be trained; the chat template renders images inside "
                                "an assistant reply")
        example["image_files"] = [str(p) for p in conversation.images[: example["input_ids"].count(image_id)]]
    return [e for e in examples if e["image_files"]], dropped + sum(not e["image_files"] for e in examples)


def load_images(files) -> list:
    from PIL import Image

    images = []
    for file in files:
        with Image.open(file) as image:
            images.append(image.convert("RGB"))
    return images


class MllamaCollator:
    """Batches of {"input_ids", "labels", "image_files"} examples for Llama 3.2 Vision, with the labels kept as built.

    The text is already tokenized (the labels were made from those exact tokens), so the processor is used for
    the images only, and Mllama's cross_attention_mask is built as MllamaProcessor builds it: each <|image|>
    token's image is seen by the tokens after it. Unsloth's UnslothVisionDataCollator tokenizes the rendered
    text again and takes its labels from that (every token, or a marker search with train_on_responses_only),
    and the CPU backend has no vision collator, hence this one.
    """

    def __init__(self, processor, pad_token_id: int, dtype: torch.dtype = torch.float32):
        self.processor, self.pad_token_id, self.dtype = processor, pad_token_id, dtype

    def __call__(self, examples: list[dict]) -> dict:
        from transformers.models.mllama.processing_mllama import (convert_sparse_cross_attention_mask_to_dense,
                                                                  get_cross_attention_token_mask)

        batch = pad_batch(examples, self.pad_token_id)
        width = batch["input_ids"].shape[1]
        image_inputs = self.processor.image_processor([load_images(e["image_files"]) for e in examples],
                                                      return_tensors="pt")
        num_tiles = image_inputs.pop("num_tiles")
        image_token_id = self.processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        cross_attention_mask = convert_sparse_cross_attention_mask_to_dense(
            [get_cross_attention_token_mask(e["input_ids"], image_token_id) for e in examples],
            num_tiles=num_tiles, max_num_tiles=self.processor.image_processor.max_image_tiles, length=width)
        return {**batch, "pixel_values": image_inputs["pixel_values"].to(self.dtype),
                "aspect_ratio_ids": image_inputs["aspect_ratio_ids"],
                "aspect_ratio_mask": image_inputs["aspect_ratio_mask"],
                "cross_attention_mask": torch.from_numpy(cross_attention_mask)}


def preflight_vision(model, collator, tokenizer, examples, batch_size: int) -> float:
    """common/preflight.py's checks on a batch built by the vision collator, and no <|image|> token trained."""
    batch = collator(examples[:batch_size])
    if (batch["labels"] == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).any():
        raise UserError(f"preflight: an {IMAGE_TOKEN} token is trained; check the chat template")
    first = examples[0]
    return check_batch(model, tokenizer, batch, first,
                       f"example 0 ({', '.join(Path(f).name for f in first['image_files'])})")
