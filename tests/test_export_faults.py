"""Faults an export must turn into one clear line (exit code 2, no traceback), leaving nothing under a final name:
a GGUF llama.cpp cannot load or whose special tokens it does not know, an --out that is a file or read-only, an
adapter file cut short, a disk that fills while merged16/ is written (and, for training, while a checkpoint is)."""
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from test_export import export, make_run
from test_export_source import hashes, refused


@pytest.fixture(scope="module")
def merged_run(tmp_path_factory):
    """A Llama-3-format run exported --to merged16 once; each test copies the export and breaks the copy."""
    run_dir = make_run(tmp_path_factory.mktemp("faults") / "tiny-llama3", "llama3", seed=5)
    export(run_dir, "--to", "merged16", "--out", run_dir / "clean")
    return run_dir


def broken_export(run_dir: Path, tmp_path: Path, change) -> Path:
    out = tmp_path / "out"
    shutil.copytree(run_dir / "clean", out)
    config_file = out / "merged16" / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    change(config)
    config_file.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return out


def test_gguf_that_llama_cpp_cannot_load_is_an_error_and_not_kept(merged_run, tmp_path):
    """A tokenizer_config.json that gives <|eot_id|> a second id: the converter writes the GGUF and exits 0, and
    llama.cpp aborts the whole process loading it (measured: SIGABRT). Before the load check, export exited 0."""
    def duplicate_eot(config):
        added = config["added_tokens_decoder"]
        eot = next(k for k, v in added.items() if v["content"] == "<|eot_id|>")
        added["5"] = dict(added[eot])
    out = broken_export(merged_run, tmp_path, duplicate_eot)
    before = hashes(out)
    message = refused(merged_run, "--to", "gguf", "--quant", "f16", "--out", out)
    f16 = out / "gguf" / f"{merged_run.name}-f16.gguf"
    assert message.startswith(f"error: {f16}: llama.cpp crashed loading it (SIGABRT") and "not kept" in message
    assert not f16.exists() and not list(out.rglob(".*partial*"))
    assert hashes(out) == before


def test_a_vocabulary_shorter_than_the_embedding_is_named(tmp_path):
    """What the GGUF reader finds once llama.cpp refused a file: a token list shorter than the embedding."""
    from gguf import GGUFWriter

    from common.export.gguf import vocabulary_problem

    path = tmp_path / "short-vocab.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_token_list(["<s>", "a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert vocabulary_problem(path, 5) == "its vocabulary has 3 tokens and the merged model's embedding 5 rows"
    assert vocabulary_problem(path, 3) is None


def test_gguf_whose_special_tokens_llama_cpp_spells_out_is_an_error(merged_run, tmp_path):
    """No added_tokens_decoder in tokenizer_config.json (transformers 5 no longer saves it): the GGUF loads, but
    <|start_header_id|> is no control token there, so llama.cpp tokenizes it letter by letter and the model
    would read its own chat format as text."""
    out = broken_export(merged_run, tmp_path, lambda config: config.pop("added_tokens_decoder"))
    message = refused(merged_run, "--to", "gguf", "--quant", "f16", "--out", out)
    assert "the chat template's special token <|start_header_id|> becomes ids [" in message
    assert "not the single token" in message
    assert not list((out / "gguf").glob("*.gguf"))


def test_out_that_is_a_file_is_refused(merged_run, tmp_path):
    target = tmp_path / "export.txt"
    target.write_text("keep me")
    message = refused(merged_run, "--to", "adapter", "--out", target)
    assert f"--out {target} is a file, not a directory" in message
    message = refused(merged_run, "--to", "adapter", "--out", target / "sub")
    assert f"--out {target / 'sub'}: {target} is a file" in message
    assert target.read_text() == "keep me"


def test_out_inside_the_saved_run_is_refused(merged_run):
    """The run's own folder, its adapter/ or a checkpoint: an export there would add to (or, with --overwrite,
    replace) what the run saved. Its export/ (the default) and other subfolders are fine."""
    before = hashes(merged_run)
    for out in (merged_run, merged_run / "adapter", merged_run / "adapter" / "x", merged_run / "checkpoint-8"):
        message = refused(merged_run, "--to", "adapter", "--out", out, "--overwrite")
        assert f"--out {out}: that is inside the saved run {merged_run.resolve()}" in message, message
    assert hashes(merged_run) == before


@pytest.mark.parametrize("base, words", [("/no/such/base", "--base /no/such/base: not found (no such directory)"),
                                         ("nobody/no-such-base", "HF_HUB_OFFLINE is set")])
def test_a_base_that_cannot_be_had_is_one_line(merged_run, tmp_path, base, words):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub-cache")}
    result = subprocess.run([sys.executable, "scripts/export.py", merged_run, "--to", "merged16", "--base", base,
                             "--out", tmp_path / "out"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr and words in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_read_only_out_is_refused_before_anything_is_written(merged_run, tmp_path):
    """chmod 555 stops everyone but root. As root (CI runs as root) the export runs in a mount namespace of its
    own where the folder is a read-only file system, which stops root too; without `unshare` the test skips."""
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    command = [sys.executable, "scripts/export.py", str(merged_run), "--to", "merged16", "--out", str(read_only / "x")]
    if os.geteuid() != 0:
        os.chmod(read_only, 0o555)
        reason = "permission denied"
    else:
        if not shutil.which("unshare"):
            pytest.skip("running as root, where chmod does not stop writes, and there is no unshare to mount the "
                        "folder read-only")
        mount = f"mount -t tmpfs -o ro,size=1m tmpfs {shlex.quote(str(read_only))}"
        probe = subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"running as root, where chmod does not stop writes, and a read-only mount is not allowed "
                        f"here ({probe.stderr.strip()})")
        command = ["unshare", "-m", "sh", "-c", f"{mount} && exec {shlex.join(command)}"]
        reason = "read-only file system"
    try:
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(read_only, 0o755)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (f"error: cannot write in {read_only} ({reason}); make it "
                                                      "writable or choose another directory with --out")
    assert list(read_only.iterdir()) == []


def run_copy(run_dir: Path, tmp_path: Path) -> Path:
    """The fixture's run without its exports (adapter/ and run_config.json), to break without touching it."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir / "adapter", copy / "adapter")
    shutil.copy2(run_dir / "run_config.json", copy / "run_config.json")
    return copy


def cut_in_half(weights: Path):
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("to", ["adapter", "merged16"])
def test_an_adapter_cut_short_is_one_line_and_nothing_is_exported(merged_run, tmp_path, to):
    """Half an adapter_model.safetensors (a full disk, a copy that stopped): --to adapter copied it, exited 0 and
    said it loads with PEFT; --to merged16 died in PeftModel.from_pretrained with a SafetensorError traceback."""
    run_dir = run_copy(merged_run, tmp_path)
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    cut_in_half(weights)
    message = refused(run_dir, "--to", to, "--out", tmp_path / "out")
    assert message.startswith(f"error: {weights}: the adapter weights cannot be read ("), message
    assert message.endswith("run the recipe again to save it (this run kept no checkpoint to copy it from)")
    assert not (tmp_path / "out").exists()


def test_an_adapter_cut_short_names_the_newest_checkpoint(merged_run, tmp_path):
    run_dir = run_copy(merged_run, tmp_path)
    for step in (2, 10):  # 10 is newer than 2, though "checkpoint-2" sorts after it as text
        shutil.copytree(run_dir / "adapter", run_dir / f"checkpoint-{step}")
    cut_in_half(run_dir / "adapter" / "adapter_model.safetensors")
    message = refused(run_dir, "--to", "adapter", "--out", tmp_path / "out")
    assert (f"copy adapter_model.safetensors from the newest checkpoint ({run_dir / 'checkpoint-10'}) into "
            f"{run_dir / 'adapter'}, or run the recipe again") in message
    assert not (tmp_path / "out").exists()


NO_SPACE = "No space left on device"


@pytest.mark.parametrize("raised_by", ["save_pretrained", "tokenizers"])
def test_disk_full_while_merged16_is_written(merged_run, tmp_path, monkeypatch, raised_by):
    """The disk fills after the free-space check (another process writes to it): save_pretrained raises an
    ENOSPC OSError, the tokenizers library a plain Exception with the system's words. Before: a traceback."""
    from transformers import PreTrainedModel

    from common.export import merge
    from common.errors import UserError
    from common.export import export_run

    if raised_by == "save_pretrained":
        def full(model, directory, **kwargs):
            Path(directory).mkdir()
            (Path(directory) / "model.safetensors").write_bytes(b"half a model")
            raise OSError(errno.ENOSPC, NO_SPACE, str(Path(directory) / "model.safetensors"))
        monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    else:
        def full(tokenizer, directory):
            raise Exception(f"{NO_SPACE} (os error 28)")
        monkeypatch.setattr(merge, "save_tokenizer", full)
    out = tmp_path / "out"
    merged = re.escape(str(out / "merged16"))
    with pytest.raises(UserError, match=r"^the disk mounted at /\S*( \(\S+\))? filled up while "
                                        rf"{merged} was written: merged16 needs about \d+\.\d MB and "
                                        r"\d+\.\d [MG]B is free; nothing was kept under that name; .* --out$"):
        export_run(merged_run, "merged16", out_dir=out)
    assert sorted(p.name for p in out.iterdir()) == []  # neither merged16/ nor its temporary folder


def test_the_space_estimate_counts_the_tokenizer_model_merged16_gets(merged_run):
    """prepare_tokenizer_for_converter copies the base's tokenizer.model into merged16/ (the run's fast tokenizer
    does not save it); the free-space check left it out."""
    from common.export.merge import TOKENIZER_FILES, tokenizer_bytes

    adapter = merged_run / "adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert not (adapter / "tokenizer.model").exists()
    assert (merged_run / "clean" / "merged16" / "tokenizer.model").exists()
    files = sum(p.stat().st_size for p in adapter.iterdir() if p.name in TOKENIZER_FILES)
    assert tokenizer_bytes(adapter) == files + (Path(base) / "tokenizer.model").stat().st_size


def test_disk_full_in_the_tokenizers_library_while_training_is_one_line(tmp_path, monkeypatch):
    """Saving a checkpoint, the tokenizers library (Rust) reports a full disk as a plain Exception, not an OSError,
    and the recipe's disk_full_is_an_error let it through as a traceback. Other plain Exceptions still go through."""
    from common.errors import UserError
    from common.train_checks import disk_full_is_an_error

    run_dir = re.escape(str(tmp_path))
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "tokenizer.json").write_text("{")  # cut off: written before trainer_state.json
    with pytest.raises(UserError, match=rf"^the disk holding {run_dir} is full: {run_dir}/checkpoint-2/tokenizer.json "
                                        r"could not be written, [\d,.]+ MB is free; removed what it cut off "
                                        rf"\({run_dir}/checkpoint-2\); free some space, then continue with "
                                        rf"--output-dir {run_dir} --resume \(from step 0: no checkpoint was "
                                        r"done\)$"):
        with disk_full_is_an_error(tmp_path):
            raise Exception(f"{NO_SPACE} (os error 28)")
    assert not (tmp_path / "checkpoint-2").exists()
    with pytest.raises(UserError, match=r"is full: /x/optimizer.pt could not be written"):
        with disk_full_is_an_error(tmp_path):
            raise OSError(errno.ENOSPC, NO_SPACE, "/x/optimizer.pt")
    with pytest.raises(Exception, match="^something else$"):
        with disk_full_is_an_error(tmp_path):
            raise Exception("something else")


def a_full_disk(monkeypatch, free: int = 4096):
    """shutil.disk_usage as on a disk that a write has just filled (what is left is less than a file system block
    or two): only the free space is faked, the write errors are the libraries' own."""
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))


def test_disk_full_while_the_trainer_writes_optimizer_pt_is_one_line(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError from its C++ stream ("[enforce fail at
    inline_container.cc:...] . unexpected pos ..."), with no errno: it went through as a traceback, and the cut-off
    checkpoint-4 kept its name beside the complete checkpoint-2."""
    import torch

    from common.errors import UserError
    from common.train_checks import disk_full_is_an_error

    complete = tmp_path / "checkpoint-2"
    complete.mkdir()
    torch.save({"step": 2}, complete / "optimizer.pt")
    (complete / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    cut_off = tmp_path / "checkpoint-4"
    cut_off.mkdir()
    (cut_off / "adapter_model.safetensors").write_bytes(b"x")
    a_full_disk(monkeypatch)
    run_dir = re.escape(str(tmp_path))
    with pytest.raises(UserError, match=rf"^the disk holding {run_dir} is full: {run_dir}/checkpoint-4/optimizer.pt "
                                        r"could not be written, 0\.0 MB is free; removed what it cut off "
                                        rf"\({run_dir}/checkpoint-4\); free some space, then continue with "
                                        rf"--output-dir {run_dir} --resume \(from checkpoint-2, the newest "
                                        r"complete checkpoint\)$"):
        with disk_full_is_an_error(tmp_path):
            with open(cut_off / "optimizer.pt", "wb") as half:  # what the stream wrote before the disk was full
                half.write(b"PK\x03\x04 half an archive")
            torch.save({"exp_avg": torch.zeros(1000)}, "/dev/full")  # the RuntimeError torch raises on ENOSPC
    assert not cut_off.exists() and (complete / "optimizer.pt").is_file()


def test_disk_full_while_the_modelfile_is_written_is_one_line(tmp_path, monkeypatch):
    """The Modelfile (and each record) written under a temporary name: an ENOSPC OSError went through as a
    traceback from atomic_files."""
    from common.errors import UserError
    from common.export.modelfile import write_modelfile

    gguf_file = tmp_path / "run-q4_k_m.gguf"
    real_write = Path.write_text

    def full(path, text, **kwargs):
        real_write(path, text[:10], **kwargs)
        raise OSError(errno.ENOSPC, NO_SPACE, str(path))
    monkeypatch.setattr(Path, "write_text", full)
    a_full_disk(monkeypatch)
    modelfile = re.escape(str(gguf_file.with_suffix(".Modelfile")))
    with pytest.raises(UserError, match=rf"^the disk mounted at /\S*( \(\S+\))? filled up while {modelfile} was "
                                        r"written: 0\.0 MB is free; nothing was kept under that name; free some "
                                        r"space, or write to another disk with --out$"):
        write_modelfile(gguf_file, None, "no TEMPLATE")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("step", ["convert", "quantize"])
def test_disk_full_while_a_gguf_is_written_is_one_line(tmp_path, monkeypatch, step):
    """llama.cpp's converter (a child process) and quantizer report a full disk as a failure of their own: it was
    "the converter failed: OSError: ..." or "the quantizer failed (1)", without the free space."""
    import subprocess

    import llama_cpp

    from common.errors import UserError
    from common.export import gguf

    target = tmp_path / f"run-{'f16' if step == 'convert' else 'q8_0'}.gguf"
    partial = gguf.temporary_name(target)
    if step == "convert":
        def converter(command, **kwargs):
            partial.write_bytes(b"GGUF half")
            return subprocess.CompletedProcess(command, 1, "", f"OSError: [Errno 28] {NO_SPACE}\n")
        monkeypatch.setattr(gguf.subprocess, "run", converter)
        make = lambda: gguf.convert_to_gguf(tmp_path, target, None)  # noqa: E731
    else:
        def quantizer(source, destination, params):
            partial.write_bytes(b"GGUF half")
            return 1
        monkeypatch.setattr(llama_cpp, "llama_model_quantize", quantizer)
        a_full_disk(monkeypatch)
        make = lambda: gguf.quantize_gguf(tmp_path / "run-f16.gguf", target, "q8_0", None)  # noqa: E731
    with pytest.raises(UserError, match=rf"filled up while {re.escape(str(target))} was written: [\d.]+ [MG]B is "
                                        "free; nothing was kept under that name"):
        make()
    assert list(tmp_path.iterdir()) == []


def damaged(merged_run: Path, tmp_path: Path, change) -> Path:
    """A copy of the run whose adapter weights `change` rewrote ({name: tensor} -> {name: tensor})."""
    from safetensors.torch import load_file, save_file

    run_dir = run_copy(merged_run, tmp_path)
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    save_file(change(load_file(weights)), weights)
    return run_dir


def export_refused(run_dir: Path, to: str, out: Path) -> str:
    """export_run in this process (PEFT and the base's config load once): the UserError's line; nothing written."""
    from common.errors import UserError
    from common.export import export_run

    with pytest.raises(UserError) as refusal:
        export_run(run_dir, to, ["f16"], out_dir=out)
    assert not out.exists()
    return str(refusal.value)


@pytest.mark.parametrize("to", ["adapter", "merged16", "gguf"])
def test_an_adapter_whose_names_fit_no_module_is_refused_before_anything_is_written(merged_run, tmp_path, to):
    """Tensor names changed (self_attn -> attn): PEFT only warned, and merged16 and the GGUFs were the plain base
    model, exit 0."""
    run_dir = damaged(merged_run, tmp_path, lambda w: {k.replace("self_attn", "attn"): v for k, v in w.items()})
    message = export_refused(run_dir, to, tmp_path / "out")
    assert re.fullmatch(rf"{re.escape(str(run_dir / 'adapter' / 'adapter_model.safetensors'))} does not fit the base "
                        r"model \S+: 16 of its 28 tensors name no LoRA module of it \(the first: base_model\.model\."
                        r"model\.layers\.0\.attn\.\w+\.lora_[AB]\.weight\), so the export would be the plain base "
                        r"model \(.*\); nothing was exported: pass the base it was trained on with --base, or run the "
                        r"recipe again .*", message), message


def test_an_adapter_with_wrong_shapes_is_refused(merged_run, tmp_path):
    """A lora_A of another rank: --to adapter copied it, exited 0 and said it loads with PEFT (it does not)."""
    def other_rank(weights):
        name = next(k for k in weights if k.endswith("q_proj.lora_A.weight"))
        return {**weights, name: weights[name][:4]}
    message = export_refused(damaged(merged_run, tmp_path, other_rank), "adapter", tmp_path / "out")
    assert (": a tensor has another shape than the model's (size mismatch for base_model.model.model.layers.0."
            "self_attn.q_proj.lora_A.default.weight: copying a param with shape torch.Size([4, 128]) from checkpoint, "
            "the shape in current model is torch.Size([8, 128]).): it was saved for another model size") in message, \
        message


def test_a_nan_adapter_is_one_line_with_exit_code_2(merged_run, tmp_path):
    """A run that diverged saves NaN: it exported with exit 0, and llama.cpp's load check passed the GGUF (its
    logits all zero)."""
    def diverged(weights):
        name = sorted(weights)[0]
        return {**weights, name: weights[name] * float("nan")}
    run_dir = damaged(merged_run, tmp_path, diverged)
    message = refused(run_dir, "--to", "gguf", "--out", tmp_path / "out")
    assert message.startswith(f"error: {run_dir / 'adapter' / 'adapter_model.safetensors'}: base_model.model.model."
                              "layers.0.mlp.down_proj.lora_A.weight has 2048 NaN or infinite values (of 2048): the "
                              "training diverged"), message
    assert not (tmp_path / "out").exists()


def test_an_adapter_saved_as_bin_is_read_and_checked(merged_run, tmp_path):
    """Only adapter_model.bin (PEFT's older format, which PEFT still loads): it was never read, so a damaged one
    exported --to adapter with exit 0. It is read as PEFT reads it, and checked like the safetensors."""
    import torch
    from safetensors.torch import load_file

    from common.export import export_run

    run_dir = run_copy(merged_run, tmp_path)
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    bin_file = weights.with_suffix(".bin")
    torch.save(load_file(weights), bin_file)
    weights.unlink()
    assert (export_run(run_dir, "adapter", out_dir=tmp_path / "good")["adapter"] / "adapter_model.bin").is_file()
    cut_in_half(bin_file)
    message = export_refused(run_dir, "adapter", tmp_path / "out")
    assert message.startswith(f"{bin_file}: the adapter weights cannot be read (") and message.endswith(
        "the file is cut short or damaged; run the recipe again to save it (this run kept no checkpoint to copy it "
        "from)"), message


def test_a_truncated_adapter_config_is_one_line_with_exit_code_2(merged_run, tmp_path):
    """adapter_config.json cut short: a JSONDecodeError traceback."""
    run_dir = run_copy(merged_run, tmp_path)
    config = run_dir / "adapter" / "adapter_config.json"
    config.write_text(config.read_text()[:100])
    message = refused(run_dir, "--to", "adapter", "--out", tmp_path / "out")
    assert message.startswith(f"error: {config}: not a readable adapter config (") and message.endswith(
        "): the file is cut short or damaged; run the recipe again to save it (this run kept no checkpoint to copy it "
        "from)"), message
    assert not (tmp_path / "out").exists()
