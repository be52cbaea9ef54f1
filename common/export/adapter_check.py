"""The run's adapter checked against the base model before an export writes anything: a damaged or mismatched adapter
would otherwise export as the plain base model (PEFT only warns about names it cannot place) or as NaN.

  adapter_config.json   JSON that PEFT reads (a file cut short is one line, not a JSONDecodeError)
  the weights           adapter_model.safetensors, or adapter_model.bin where that is all there is: every tensor read
  their values          finite (a run that diverged saves NaN, and llama.cpp's load check passes a GGUF of it)
  their names, shapes   PEFT's own loading on the base built from its config on the meta device (no weights are
                        downloaded): every tensor lands on a LoRA module of the base, every module it targets gets
                        its weights, and every shape fits
"""
import json
import pickle
import re
import warnings
from pathlib import Path

from common.errors import UserError
from common.export.merge import adapter_unreadable, base_config, how_to_replace, model_class


def read_adapter_config(config_file: Path) -> dict:
    """adapter_config.json, or one line saying it is cut short or damaged."""
    config_file = Path(config_file)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise UserError(f"{config_file}: not a readable adapter config ({str(err).splitlines()[0]}): the file is cut "
                        f"short or damaged; {how_to_replace(config_file.parent, config_file.name)}") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_file}: not an adapter config (a JSON object); "
                        f"{how_to_replace(config_file.parent, config_file.name)}")
    return config


def adapter_weights(adapter_dir: Path) -> tuple[Path, dict]:
    """The file PEFT loads (adapter_model.safetensors, else adapter_model.bin) and every tensor in it, read as PEFT
    reads it: a file cut short or damaged is one line."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    for file in (adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"):
        if not file.is_file():
            continue
        try:
            if file.suffix == ".safetensors":
                return file, load_file(file)
            weights = torch.load(file, map_location="cpu", weights_only=True)  # PEFT reads .bin this way
        except (SafetensorError, OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
            raise adapter_unreadable(file, type(err)(str(err).split(". ")[0])) from None  # torch's first sentence
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise adapter_unreadable(file, ValueError("not a dictionary of tensors"))
        return file, weights
    raise UserError(f"{adapter_dir}: no adapter_model.safetensors (or .bin); {how_to_replace(adapter_dir)}")


def check_adapter(adapter_dir: Path, base: str) -> None:
    """Every check in the module docstring, for the adapter in `adapter_dir` on `base` (a hub id or local path)."""
    import torch

    file, weights = adapter_weights(adapter_dir)
    for name, tensor in weights.items():
        bad = int((~torch.isfinite(tensor)).sum()) if tensor.is_floating_point() else 0
        if bad:
            raise UserError(f"{file}: {name} has {bad} NaN or infinite values (of {tensor.numel()}): the training "
                            "diverged, and a model merged with it computes nothing but NaN; nothing was exported: "
                            "train again (a lower --learning-rate, or check the data)")
    fix = f"pass the base it was trained on with --base, or {how_to_replace(Path(adapter_dir))}"
    problem = placement_problem(adapter_dir, base, weights)
    if problem:
        raise UserError(f"{file} does not fit the base model {base}: {problem}; nothing was exported: {fix}")


def placement_problem(adapter_dir: Path, base: str, weights: dict) -> str | None:
    """What keeps `weights` from loading as PEFT loads them onto `base` (built on the meta device), or None."""
    import torch
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    config = base_config(base)
    try:
        peft_config = PeftConfig.from_pretrained(str(adapter_dir))
    except (ValueError, TypeError, KeyError) as err:
        return f"PEFT cannot read its adapter_config.json ({str(err).splitlines()[0]})"
    if hasattr(peft_config, "init_lora_weights"):  # PiSSA, LoftQ, ...: a start computed from real weights
        peft_config.init_lora_weights = True
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's warnings are what this turns into a refusal
        model = get_peft_model(model_class(config).from_config(config), peft_config)
        try:
            loaded = set_peft_model_state_dict(model, weights)
        except RuntimeError as err:  # load_state_dict: a tensor whose shape does not fit its module
            mismatch = re.search(r"size mismatch for [^\n]*", str(err))
            shown = mismatch.group(0) if mismatch else str(err).splitlines()[0]
            return (f"a tensor has another shape than the model's ({shown}): "
                    "it was saved for another model size, or with another r than its adapter_config.json says")
    unplaced = loaded.unexpected_keys
    if unplaced:
        return (f"{len(unplaced)} of its {len(weights)} tensors name no LoRA module of it (the first: {unplaced[0]}), "
                "so the export would be the plain base model (its tensor names were changed, or it was saved for "
                "another model)")
    prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(peft_config.peft_type, "")  # as PeftModel.load_adapter filters them
    missing = [key for key in loaded.missing_keys if prefix in key and "default" in key]
    if missing:
        return (f"no weights for {len(missing)} of the tensors its adapter_config.json targets (the first: "
                f"{missing[0]}), which would stay as initialised")
    return None
