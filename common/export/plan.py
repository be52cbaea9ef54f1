"""The first step of an export: what to build, what an earlier export already made and may be reused, and the disk
space the rest needs. Everything here is checked from the run's files and the base model's config, before any
merge or download, so a request that cannot succeed is refused in seconds."""
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from common.errors import UserError
from common.export.atomic_files import remove_stale_partials
from common.export.destination import check_free_space, check_output_dir
from common.export.gguf import BYTES_PER_PARAM
from common.export.adapter_check import check_adapter, read_adapter_config
from common.export.merge import base_config, count_parameters, is_encoder_decoder, sixteen_bit_base, tokenizer_bytes
from common.export.request import TARGETS, parse_quants, refuse_gguf
from common.export.source_record import adapter_record, origin, refuse_stale
from common.four_bit import read_4bit_layers
from common.labels import template_options

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Held-out conversations for a run whose run_config.json names none (a run saved by hand, or an older recipe).
FALLBACK_EVAL_FILE = PROJECT_ROOT / "datasets/chat_multiturn/test.jsonl"
MERGE_ONTO = ("trained", "original")  # scripts/export.py --merge-onto: what a 4-bit run's adapter is merged into


@dataclass
class Run:
    dir: Path
    adapter_dir: Path
    trained_on: str          # adapter_config.json's base_model_name_or_path
    config: dict             # run_config.json ({} when the run has none)
    config_written: datetime  # when run_config.json was written (the recipe renders its data just before)


@dataclass
class Plan:
    run: Run
    to: str                  # adapter | merged16 | gguf
    out: Path                # where everything lands (default RUN_DIR/export)
    targets: dict            # "adapter" | "merged16" | QUANT -> its final path; f16 first among the quants
    quants: list[str]        # the GGUFs to have at the end, f16 first (the quantizer's input)
    base: str | None         # the 16-bit base the adapter is merged into (None for --to adapter)
    record: dict | None      # which adapter on which base: written beside everything made from it
    reused: set[str] = field(default_factory=set)  # targets an earlier export made from this same adapter
    eval_file: Path | None = None  # the run's held-out conversations (Modelfile check, --verify)
    eval_note: str = ""      # a line saying which file that is, or why there is none
    chat_options: dict = field(default_factory=dict)  # what training passed the chat template (--thinking)
    verify: bool = False     # the fine-tune check on merged16, and (gguf) the parity of each GGUF with it
    four_bit_layers: dict | None = None  # a 4-bit run's layers, merged onto as trained (common/four_bit.py)


def read_run(run_dir) -> Run:
    """RUN_DIR/adapter, the base model it was trained on, and run_config.json."""
    run_dir = Path(run_dir)
    adapter_dir = run_dir / "adapter"
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"{run_dir}: no adapter/adapter_config.json; give the directory of a finished run "
                        "(it holds adapter/ and run_config.json)")
    base = read_adapter_config(config_file).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config_file}: base_model_name_or_path is empty; pass the 16-bit base model with --base")
    run_config = run_dir / "run_config.json"
    try:
        config = json.loads(run_config.read_text(encoding="utf-8")) if run_config.is_file() else {}
    except ValueError as err:
        raise UserError(f"{run_config}: not JSON ({err}); restore it from the run, or delete it") from None
    written = datetime.fromtimestamp((run_config if run_config.is_file() else config_file).stat().st_mtime)
    return Run(run_dir, adapter_dir, base, config, written)


def held_out_file(run: Run) -> tuple[Path | None, str]:
    """The run's eval_file, found as the recipes find it (as given, from the current directory, then from the
    project root), and a line saying which file it is. A run that names none gets the bundled DeepSeek file;
    one whose file is gone gets None and the reason."""
    name = run.config.get("eval_file")
    if not name:
        return FALLBACK_EVAL_FILE, (f"{run.dir}/run_config.json names no eval_file: using the bundled "
                                    f"{FALLBACK_EVAL_FILE.relative_to(PROJECT_ROOT)}")
    for candidate in (Path(name), PROJECT_ROOT / name):
        if candidate.is_file():
            return candidate.resolve(), f"held-out conversations: {candidate.resolve()} (the run's eval_file)"
    return None, (f"{run.dir}/run_config.json: eval_file {name!r} is not found from {Path.cwd()} nor from "
                  f"{PROJECT_ROOT}; put it back there, or set eval_file to where the held-out file is now")


def plan_export(run_dir, to: str, quants, out_dir, overwrite: bool, verify: bool, base: str | None,
                merge_onto: str = "trained") -> Plan:
    """Everything export_run will do, checked before it does any of it: the request, the run, the base model and
    which of its weights the adapter is merged onto, what exists already under --out (reused when made from this
    adapter, refused otherwise), and the free space."""
    if to not in TARGETS:
        raise UserError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    if merge_onto not in MERGE_ONTO:
        raise UserError(f"--merge-onto {merge_onto!r}: choose one of {', '.join(MERGE_ONTO)}")
    if verify and to == "adapter":
        raise UserError("--verify checks the merged model (and the GGUFs): use it with --to merged16 or --to gguf")
    run = read_run(run_dir)
    out = Path(out_dir) if out_dir else run.dir / "export"
    check_output_dir(out, run.dir)
    check_adapter(run.adapter_dir, base_model(base, run))  # before anything is written
    name = run.dir.resolve().name
    asked = parse_quants(quants) if to == "gguf" else []
    quant_list = ["f16"] + [q for q in asked if q != "f16"] if to == "gguf" else []  # f16 first
    targets = {"adapter": out / "adapter"} if to == "adapter" else {"merged16": out / "merged16"}
    targets.update({q: out / "gguf" / f"{name}-{q}.gguf" for q in quant_list})
    plan = Plan(run, to, out, targets, quant_list, None, None, verify=verify,
                # the run's --thinking, as training passed it to the template (a run saved without one had it on)
                chat_options=template_options(run.config.get("thinking", "on")))

    config = None
    if to != "adapter":  # before any download or merge: the base's config says what it is
        plan.base = base_model(base, run)
        config = base_config(plan.base)
        if to == "gguf":
            refuse_gguf(config.model_type, getattr(config, "architectures", None), plan.base,
                        is_encoder_decoder(config))
        if getattr(config, "quantization_config", None):
            raise UserError(f"{plan.base} is stored quantized, and merging into it would round the merged weights; "
                            "pass its 16-bit original with --base (for unsloth/NAME-bnb-4bit that is unsloth/NAME)")
        plan.record = adapter_record(run.adapter_dir, plan.base)
        plan.four_bit_layers = read_4bit_layers(run.adapter_dir) if merge_onto == "trained" else None
        # merged16/ made from one base is not another's: an earlier export onto the 16-bit weights is not reused
        plan.record["merged_onto"] = "4-bit layers as trained" if plan.four_bit_layers else "16-bit weights"
    if to == "gguf" or verify:
        plan.eval_file, plan.eval_note = held_out_file(run)
        if verify and plan.eval_file is None:
            raise UserError(plan.eval_note)
    for folder in (out, out / "gguf"):
        if folder.is_dir():
            remove_stale_partials(folder)
    if to == "gguf" and not overwrite:
        plan.reused = reusable(targets, asked, plan.record)
    existing = [p for key, p in targets.items() if p.exists() and key not in plan.reused]
    if existing and not overwrite:
        where = ""
        if len(existing) == 1 and plan.record:  # say where it came from: the same adapter means nothing is lost
            where = f" ({origin(existing[0], plan.record) or 'made from this same adapter'})"
        raise UserError(f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}{where}; "
                        "pass --overwrite to replace, or --out DIR to export elsewhere")
    if config is not None:
        check_free_space(out, space_needed(config, plan.base, run.adapter_dir, quant_list, plan.reused))
    return plan


def base_model(base: str | None, run: Run) -> str:
    """--base, else the 16-bit twin of the model the adapter was trained on. The built-in SmolLM2 is named by
    "smollm2-135m": as --base, or when a run of it no longer finds its cached folder (a cleared cache), it is
    rebuilt (common/smollm2.py)."""
    from common.smollm2 import SMOLLM2, smollm2_path
    if base == SMOLLM2 or (base is None and run.config.get("model") == SMOLLM2 and not Path(run.trained_on).exists()):
        return str(smollm2_path())
    return base or sixteen_bit_base(run.trained_on)


def reusable(targets: dict, asked: list[str], record: dict) -> set[str]:
    """Which inputs an earlier export already made for this adapter (merged16/, an f16 GGUF not asked for). One
    made from another adapter, or with no record, is refused (--overwrite replaces it instead)."""
    reused = set()
    candidates = [("merged16", targets["merged16"] / "config.json")]
    if "f16" not in asked:
        candidates.append(("f16", targets["f16"]))
    for key, marker in candidates:
        if marker.exists():
            why = origin(targets[key], record)
            if why:
                refuse_stale(targets[key], why)
            reused.add(key)
    return reused


def space_needed(config, base: str, adapter_dir: Path, quant_list: list[str], reused: set[str]) -> dict[str, float]:
    """Bytes by item: merged16/ (weights + the tokenizer files), the base download, each GGUF (weights + the
    vocabulary it embeds, about as big as the tokenizer files)."""
    n_params = count_parameters(config)
    tokenizer_size = tokenizer_bytes(adapter_dir, base)  # and the base's tokenizer.model, copied in too
    needs = {}
    if "merged16" not in reused:
        needs["merged16"] = n_params * BYTES_PER_PARAM["merged16"] + tokenizer_size
        if not Path(base).is_dir():
            needs["base download"] = n_params * BYTES_PER_PARAM["merged16"] + tokenizer_size
    needs.update({f"{q} GGUF": n_params * BYTES_PER_PARAM[q] + tokenizer_size for q in quant_list if q not in reused})
    return needs
