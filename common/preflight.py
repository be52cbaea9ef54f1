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
    print_shapes(batch)
    labels, real = batch["labels"], batch["attention_mask"].bool()
    for row in range(labels.shape[0]):  # each example on its own tokens: padding is -100 too, and proves nothing
        own = labels[row][real[row]]
        if not (own == IGNORE_INDEX).any():
            raise UserError(f"preflight: example {row} of the batch has no -100 label on its own tokens, so its prompt "
                            "would be trained too; check the label layout")
        if not (own != IGNORE_INDEX).any():
            raise UserError(f"preflight: every label of example {row} is -100, so nothing would be trained; check the "
                            "data has assistant turns")
    loss = forward_loss(model, batch)
    print(f"  {name}, trained part marked:")
    print("  " + marked_text(tokenizer, first["input_ids"], first["labels"], color=False).replace("\n", "\n  "))
    return loss


def print_shapes(batch: dict):
    for key, tensor in batch.items():
        print(f"  {key:20s} shape {tuple(tensor.shape)}  dtype {tensor.dtype}")


def forward_loss(model, batch: dict) -> float:
    """One forward pass with labels: its loss, which must exist (not None) and be finite."""
    device = next(model.parameters()).device
    with torch.no_grad():
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
    if loss is None:
        raise UserError("preflight: the model returned no loss although the batch has labels; load it with its "
                        "task head (AutoModelForCausalLM, AutoModelForSeq2SeqLM), not the bare AutoModel")
    loss = loss.item()
    if not math.isfinite(loss):
        raise UserError(f"preflight: the loss of one forward pass is {loss}; lower the learning rate or check "
                        "the model's dtype (fp16 overflows on some models: try bf16 or float32)")
    print(f"  one forward pass: loss {loss:.4f}")
    return loss


def seq2seq_preflight(model, tokenizer, collator, examples, batch_size: int) -> float:
    """The checks for an encoder-decoder (T5, mT5, mt0) on one batch made by the training collator; returns its loss.

    Its labels are the target alone (the prompt is the encoder's input, never a label), so "some -100" says nothing
    here: the check is that -100 stands exactly on the padded label positions, every target token (</s> included) is
    kept, and the pad id is never a trained label. At least two examples, so the batch has padding to check."""
    rows = examples[: max(batch_size, 2)]
    batch = collator([{k: e[k] for k in ("input_ids", "attention_mask", "labels")} for e in rows])
    print_shapes(batch)
    labels, padded = batch["labels"], 0
    for row, example in enumerate(rows):
        n = len(example["labels"])
        if labels[row, :n].tolist() != example["labels"]:
            raise UserError(f"preflight: example {row}'s target tokens changed in the batch (a collator that masks by "
                            "token id masks </s> when pad == eos); pad labels with DataCollatorForSeq2Seq's "
                            "label_pad_token_id=-100")
        if (labels[row, n:] != IGNORE_INDEX).any():
            raise UserError("preflight: a padded label position is not -100, so the loss would train the model to "
                            "write padding; use DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)")
        padded += labels.shape[1] - n
    trained = int((labels != IGNORE_INDEX).sum())
    if not trained:
        raise UserError("preflight: every label is -100, so nothing would be trained; check the data has responses")
    if tokenizer.pad_token_id is not None and (labels == tokenizer.pad_token_id).any():
        raise UserError(f"preflight: the pad id {tokenizer.pad_token_id} is a trained label; "
                        "padded labels must be -100")
    print(f"  labels: -100 on all {padded} padded label positions and nowhere else; {trained} target tokens trained"
          + ("" if padded else " (no padding in this batch: its targets have one length)"))
    loss = forward_loss(model, batch)
    print(f"  example 0: encoder input {tokenizer.decode(rows[0]['input_ids'])!r}")
    print(f"             target        {tokenizer.decode(rows[0]['labels'])!r}")
    return loss
