"""Which layers get LoRA: presets by name, or an explicit comma-separated list checked against the model."""
import torch

from common.errors import UserError

PRESETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
FULLY_TRAINED = ("embed_tokens", "lm_head")  # trained whole (modules_to_save), not through LoRA


def linear_layer_names(model) -> list[str]:
    """Distinct leaf names of the model's linear layers (4-bit ones included), lm_head excluded."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    names.discard("lm_head")
    return sorted(names)


def resolve_targets(targets: str, model) -> list[str]:
    """`targets` is a preset (attention, mlp, all-linear) or a list like "q_proj,v_proj,embed_tokens"."""
    available = linear_layer_names(model)
    if targets in PRESETS:
        chosen = [name for name in PRESETS[targets] if name in available]
        if not chosen:
            raise UserError(f"targets={targets!r} matches no layer of this model; its linear layers are: "
                            f"{', '.join(available)}")
        return chosen
    chosen = [name.strip() for name in targets.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in available and name not in FULLY_TRAINED]
    if unknown or not chosen:
        raise UserError(f"targets: this model has no layer named {', '.join(unknown) or '(none given)'}; use a "
                        f"preset ({', '.join(PRESETS)}) or names from: {', '.join(available + list(FULLY_TRAINED))}")
    return chosen
