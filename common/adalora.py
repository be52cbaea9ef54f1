"""AdaLoRA: PEFT's AdaLoraConfig, with the rank budget reallocated after every optimizer step.

Unsloth has no AdaLoRA, so the recipe attaches it with PEFT directly. AdaLoRA scores each singular value
from its gradient and prunes the least important ones until the layers average target_r. Its schedule:
tinit warm-up steps at init_r, then reallocation every deltaT steps, then tfinal steps with ranks fixed.
"""
import json

from transformers import TrainerCallback


def adalora_config(*, targets: list[str], total_steps: int, lora_alpha: float, lora_dropout: float, bias: str,
                   init_r: int, target_r: int, tinit: int, tfinal: int, deltaT: int, beta1: float, beta2: float,
                   orth_reg_weight: float):
    from peft import AdaLoraConfig

    return AdaLoraConfig(
        task_type="CAUSAL_LM", target_modules=targets, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias=bias,
        init_r=init_r, target_r=target_r, tinit=tinit, tfinal=tfinal, deltaT=deltaT, beta1=beta1, beta2=beta2,
        orth_reg_weight=orth_reg_weight, total_step=total_steps)


class AdaLoraBudget(TrainerCallback):
    """Calls update_and_allocate at the one moment it needs: after optimizer.step(), before the gradients are
    zeroed (the importance scores are computed from them). Trainer's on_optimizer_step is that moment. The model
    comes with each call rather than being kept here, so that `del trainer, model` really frees it."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


def adalora_ranks(model) -> dict[str, int]:
    """The rank each adapted layer ends with: its singular values that were not pruned."""
    from peft.tuners.adalora import AdaLoraLayer

    ranks = {}
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer) and "default" in module.lora_E:
            ranks[name.removeprefix("base_model.model.")] = int((module.lora_E["default"] != 0).sum())
    return ranks


def report_adalora_ranks(model, init_r: int, path) -> dict[str, int]:
    """Print the final rank of every adapted layer (watch how the budget was used) and save them as JSON."""
    ranks = adalora_ranks(model)
    for name, rank in ranks.items():
        print(f"  {name:45s} rank {rank:2d} of {init_r}  {'#' * rank}")
    total = sum(ranks.values())
    print(f"  {len(ranks)} layers, {total} ranks in all, {total / max(len(ranks), 1):.2f} on average")
    path.write_text(json.dumps(ranks, indent=1) + "\n")
    return ranks
