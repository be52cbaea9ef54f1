"""bitsandbytes' 4-bit layers on a CPU: one setting that training, evaluation and a reload all need."""


def unpacked_cpu_4bit(model):
    """Keep bitsandbytes' 4-bit layers in their trainable layout on a CPU. On a CPU with AVX512-BF16, bitsandbytes
    0.50 repacks a Linear4bit's weight in place at its first forward in eval mode without gradients (the preflight's,
    the evaluation's) for a faster inference kernel, and then (1) a training forward through it fails ("a view of a
    leaf Variable that requires grad is being used in an in-place operation"), (2) its outputs move by up to about 1e-2
    (block scales rounded to bf16), and (3) a layer whose in_features is not a multiple of 64 cannot be repacked at all
    (the tiny Mllama's 32-wide vision encoder: "shape '[32, 0]' is invalid"). Turning the repacking off keeps one
    layout for training, evaluation and a reload. Load the 4-bit base the same way to compare logits with the run."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model
