"""Which adapter an export was made from, so that an export of one adapter is never taken for another's.

Each merged16/ holds export_source.json, and each GGUF a RUN-QUANT.source.json beside it, with the sha256 of the
adapter's weights and adapter_config.json and the base it was merged into. An existing merged16/ or f16 GGUF is
reused only when its record is this run's adapter on this base: run B's export into run A's --out, or an export
after `--resume` trained the adapter further, would otherwise silently package the old weights.
"""
import hashlib
import json
from pathlib import Path

from common.export.atomic_files import remove, write_json_atomic
from common.errors import UserError

RECORD_NAME = "export_source.json"  # inside merged16/
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def adapter_record(adapter_dir: Path, base: str) -> dict:
    """The record of this run's adapter: its files' sha256, one sha256 over them all, and the base."""
    adapter_dir = Path(adapter_dir)
    weights = [name for name in WEIGHT_FILES if (adapter_dir / name).is_file()]
    if not weights:
        raise UserError(f"{adapter_dir}: no adapter_model.safetensors (or .bin); the run did not finish saving its "
                        "adapter: train it to the end, or --resume it")
    files = {name: file_sha256(adapter_dir / name) for name in ["adapter_config.json", *weights]}
    combined = hashlib.sha256("".join(f"{name} {sha}\n" for name, sha in sorted(files.items())).encode()).hexdigest()
    # A local base is recorded by its absolute path: "models/x" and "./models/x" are the same base.
    base_id = str(Path(base).resolve()) if Path(base).is_dir() else base
    return {"adapter": str(adapter_dir.resolve()), "adapter_sha256": combined, "files": files, "base": base_id}


def record_path(export: Path) -> Path:
    """merged16/export_source.json for a folder, gguf/RUN-QUANT.source.json for a GGUF file."""
    export = Path(export)
    return export / RECORD_NAME if export.suffix != ".gguf" else export.with_suffix(".source.json")


def write_record(export: Path, record: dict):
    write_json_atomic(record_path(export), record)


def forget_record(export: Path):
    """Before a GGUF is replaced: its old record must never end up beside the new file."""
    remove(record_path(export))


def read_record(export: Path) -> dict | None:
    try:
        return json.loads(record_path(export).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def origin(export: Path, record: dict) -> str | None:
    """None when `export` was made from the adapter and base in `record`; otherwise where it came from, said in
    words for the error message."""
    found = read_record(export)
    if found is None:
        return (f"has no record of the adapter it was made from ({record_path(export).name} is missing: an older "
                "export, or copied by hand)")
    same_base = found.get("base") == record["base"] and found.get("merged_onto", "16-bit weights") == record.get(
        "merged_onto", "16-bit weights")  # an export from before merged_onto was recorded merged onto 16-bit weights
    if found.get("adapter_sha256") == record["adapter_sha256"] and same_base:
        return None
    if found.get("adapter_sha256") == record["adapter_sha256"] and found.get("base") == record["base"]:
        return (f"was merged onto the base's {found.get('merged_onto', '16-bit weights')}, not its "
                f"{record.get('merged_onto')} as asked (--merge-onto)")
    sha_then, sha_now = str(found.get("adapter_sha256"))[:12], record["adapter_sha256"][:12]
    if found.get("adapter") == record["adapter"] and found.get("base") == record["base"]:
        return (f"was made from {found['adapter']} as it was earlier (adapter sha256 {sha_then}, now {sha_now}: "
                "trained further since?)")
    return (f"was made from another adapter, {found.get('adapter')} (sha256 {sha_then}, base {found.get('base')}), "
            f"not this run's {record['adapter']} (sha256 {sha_now}, base {record['base']})")


def refuse_stale(export: Path, why: str):
    raise UserError(f"{export} {why}, so it is not used for this export; pass --overwrite to replace it, or "
                    "--out DIR to export elsewhere")
