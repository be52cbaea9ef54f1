"""Checks before training: batch shapes and dtypes, labels that mask and train, a finite loss."""
import math

import torch

from common.errors import UserError
from common.labels import IGNORE_INDEX, marked_text


def pad_batch(examples, pad_token_id) -> dict:
    """A right-padded batch of {"input_ids", "labels"} examples, as tensors."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def preflight(model, tokenizer, examples, batch_size: int) -> float:
    """Print and check one padded batch of text examples; return its loss."""
    return check_batch(model, tokenizer, pad_batch(examples[:batch_size], tokenizer.pad_token_id), examples[0])


def check_batch(model, tokenizer, batch: dict, first: dict, name: str = "example 0") -> float:
    """Print and check a batch as the trainer will see it; return its loss. Raises UserError with the fix when a
    check fails. `first` is the batch's first example, printed with its trained part marked."""
    for key, tensor in batch.items():
        print(f"  {key:20s} shape {tuple(tensor.shape)}  dtype {tensor.dtype}")
    labels, real = batch["labels"], batch["attention_mask"].bool()
    for row in range(labels.shape[0]):  # each example on its own tokens: padding is -100 too, and proves nothing
        own = labels[row][real[row]]
        if not (own == IGNORE_INDEX).any():
            raise UserError(f"preflight: example {row} of the batch has no -100 label on its own tokens, so its prompt "
                            "would be trained too; check the label layout")
        if not (own != IGNORE_INDEX).any():
            raise UserError(f"preflight: every label of example {row} is -100, so nothing would be trained; check the "
                            "data has assistant turns")
    device = next(model.parameters()).device
    with torch.no_grad():
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss.item()
    if not math.isfinite(loss):
        raise UserError(f"preflight: the loss of one forward pass is {loss}; lower the learning rate or check "
                        "the model's dtype (fp16 overflows on some models: try bf16 or float32)")
    print(f"  one forward pass: loss {loss:.4f}")
    print(f"  {name}, trained part marked:")
    print("  " + marked_text(tokenizer, first["input_ids"], first["labels"], color=False).replace("\n", "\n  "))
    return loss
