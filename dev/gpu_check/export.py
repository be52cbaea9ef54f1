"""Part 4, export from a 4-bit run: a run trained in 4-bit merged from its 16-bit base onto its 4-bit layers as trained,
with the fine-tune check, GGUF with the parity check
(export_run, timed in a worker process: export_worker), then scripts/export.py --base as a user runs it."""
import json
import shutil
import time
from pathlib import Path

from common.export.destination import dir_size
from dev.gpu_check.context import PACKAGE_DIR, ROOT, Context, item, load_json, status_of
from dev.gpu_check.data import first_rows
from dev.gpu_check.plan import Check
from dev.gpu_check.recipes import loading_line


def export_worker(spec_file: str):
    """In a child process: export_run with the host and GPU memory sampled throughout, each step timed."""
    import threading

    spec = json.loads(Path(spec_file).read_text())
    samples, stop = [], threading.Event()
    try:
        import psutil
        me = psutil.Process()
    except ImportError:
        psutil = me = None
    import torch
    on_gpu = torch.cuda.is_available()

    def rss() -> int:
        if me is None:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def sample():
        while not stop.is_set():
            samples.append((time.time(), rss(), torch.cuda.memory_reserved() if on_gpu else 0))
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.time()
    thread.start()
    from common.export import export_run
    done = export_run(spec["run_dir"], spec["to"], spec["quants"], out_dir=spec["out"], verify=spec["verify"],
                      base=spec.get("base"))
    stop.set()
    thread.join()
    total = time.time() - start
    # Each step's window: export_run reports the seconds of merged16, f16 and each quant, in that order; the rest of
    # the time is its checks before them and the parity check after.
    steps, t = [], start
    for name, seconds in done.get("seconds", {}).items():
        steps.append({"step": name, "seconds": seconds, "from": t, "to": t + seconds})
        t += seconds
    if spec["verify"]:
        steps.append({"step": "parity", "seconds": start + total - t, "from": t, "to": start + total})
    for s in steps:
        inside = [x for x in samples if s["from"] <= x[0] <= s["to"] + 0.2] or samples[-1:]
        s["peak_host_gib"] = max(x[1] for x in inside) / 2**30 if inside else None
        s["peak_gpu_gib"] = max(x[2] for x in inside) / 2**30 if inside and on_gpu else None
        del s["from"], s["to"]
    result = {"seconds": total, "steps": steps, "parity": done.get("parity"),
              "peak_host_gib": max((x[1] for x in samples), default=0) / 2**30,
              "peak_gpu_gib": torch.cuda.max_memory_reserved() / 2**30 if on_gpu else None,
              "files": {k: str(v) for k, v in done.items() if k not in ("seconds", "parity", "modelfiles")}}
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))


def run_export(ctx: Context, check: Check) -> dict:
    items, metrics = [], {}
    if ctx.cpu:  # a 4-bit run of the tiny DeepSeek model (loaded in 4-bit on the fly), merged into its own checkpoint
        from common.tiny.llama import tiny_model_path
        base16 = trained_on = str(tiny_model_path("deepseek", ctx.cache))
        items.append(item("16-bit base from the -bnb-4bit name", None, "not applicable on CPU: the run loaded the "
                          "tiny model's unquantized checkpoint in 4-bit on the fly (no NAME-bnb-4bit copy: "
                          "common/random_models.quantized_copy needs CUDA), so that checkpoint is the base, given "
                          "with --base"))
    else:
        base16 = ctx.model("r1-qwen")
        build = ctx.run("build-r1-qwen-bnb-4bit", [ctx.python, PACKAGE_DIR, "--build", f"bnb4:{base16}"], timeout=900)
        line = next((ln for ln in reversed(build["text"].splitlines()) if ln.startswith("built ")), None)
        if build["rc"] != 0 or line is None:
            raise RuntimeError(f"the 4-bit copy failed: {build['tail']}")
        trained_on = line.split(" ", 1)[1]
        ctx.builds["r1-qwen-bnb-4bit"] = {"arch": f"{Path(trained_on).name} (stored in 4-bit)", "path": trained_on,
                                          "seconds": build["seconds"],
                                          "gib_on_disk": round(dir_size(trained_on) / 2**30, 2)}
    run_dir = ctx.work / "runs" / check.id
    shutil.rmtree(run_dir, ignore_errors=True)
    earlier = ctx.work / "runs" / "recipe-deepseek"
    earlier_model = load_json(ctx.work / "probes" / "recipe-deepseek.json", {}).get("model") or {}
    if ctx.cpu and ctx.passed.get("recipe-deepseek") and (earlier / "adapter" / "adapter_config.json").is_file() \
            and earlier_model.get("linear4bit_layers"):
        return export_and_check(ctx, check, earlier, base16, items + [item(
            "4-bit run trained", True, f"the run of recipe-deepseek is exported: the tiny DeepSeek model loaded in "
                                       f"4-bit ({earlier_model['linear4bit_layers']} bitsandbytes Linear4bit layers), "
                                       "float32 compute")])
    data = {"--eval-file": first_rows(ROOT / "datasets/chat_multiturn/test.jsonl", 2 if ctx.cpu else 8,
                                      ctx.work / "data" / f"{check.id}-eval.jsonl")}
    if ctx.cpu:
        data["--train-file"] = first_rows(ROOT / "datasets/chat_multiturn/train.jsonl", 2,
                                          ctx.work / "data" / f"{check.id}-train.jsonl")
    args = ["--model", trained_on, "--output-dir", run_dir, "--overwrite", "--save-steps", "100000", "--eval-prompts",
            "1", "--max-new-tokens", "4", "--max-steps", 3 if ctx.cpu else 10, "--load-in-4bit"]
    if ctx.cpu:
        args += ["--batch-size", "2", "--grad-accum", "1", "--max-seq-length", "256", "--warmup-steps", "0"]
    for flag, path in data.items():
        args += [flag, path]
    trained = ctx.run(f"{check.id}-train", [ctx.python, "recipes/deepseek_multiturn.py", *args], timeout=1200)
    said = loading_line(trained["text"])
    ok = trained["rc"] == 0 and "4-bit" in said
    items.append(item(f"4-bit run trained on {Path(trained_on).name}" if not ctx.cpu else "4-bit run trained", ok,
                      f"exit {trained['rc']} in {trained['seconds']:.0f} s" + (f"; the recipe printed: {said}" if said
                                                                                else "")
                      + ("" if trained["rc"] == 0 else f": {trained['tail'][-600:]}")))
    if trained["rc"] != 0:
        return {"status": status_of(items), "items": items, "metrics": metrics, "log": trained["log"]}
    return export_and_check(ctx, check, run_dir, base16, items)


def export_and_check(ctx: Context, check: Check, run_dir: Path, base16: str, items: list) -> dict:
    metrics = {}
    adapter_base = load_json(run_dir / "adapter" / "adapter_config.json", {}).get("base_model_name_or_path")
    metrics["adapter_base"] = adapter_base

    # export_run: merged16 (the base found from the name on a GPU), GGUF f16 and q4_k_m, the parity check
    out = ctx.work / "export" / "auto"
    shutil.rmtree(out, ignore_errors=True)
    # On a CPU f16 alone: the parity check takes about 30 s a type there (tests/test_export.py covers the others).
    quants = ["f16"] if ctx.cpu else ["f16", "q4_k_m"]
    spec = {"run_dir": str(run_dir), "to": "gguf", "quants": quants, "out": str(out), "verify": True,
            "base": base16 if ctx.cpu else None, "result": str(ctx.work / "export" / "auto.json")}
    (ctx.work / "export" / "auto.spec.json").write_text(json.dumps(spec))
    exported = ctx.run(f"{check.id}-export", [ctx.python, PACKAGE_DIR, "--export-worker",
                                              ctx.work / "export" / "auto.spec.json"], timeout=1800)
    done = load_json(spec["result"]) if exported["rc"] == 0 else None
    items.append(item(f"export_run: merged16 + GGUF {', '.join(quants)} + parity", done is not None,
                      f"exit {exported['rc']} in {exported['seconds']:.0f} s"
                      + ("" if done else f": {exported['tail'][-800:]}")))
    if done:
        metrics["export"] = done
        merged_config = load_json(out / "merged16" / "config.json", {})
        if not ctx.cpu:
            quantized = "quantization_config" in merged_config
            base_found = str(Path(adapter_base).name).endswith("-bnb-4bit") and not quantized
            items.append(item("16-bit base from the -bnb-4bit name", base_found,
                              f"trained on {Path(adapter_base).name}; merged16 is "
                              f"{merged_config.get('dtype') or merged_config.get('torch_dtype')}, "
                              f"{'' if quantized else 'not '}quantized"))
        steps = "; ".join(f"{s['step']} {s['seconds']:.1f} s (host {s['peak_host_gib']:.2f} GiB"
                          + (f", GPU {s['peak_gpu_gib']:.2f} GiB" if s.get("peak_gpu_gib") is not None else "") + ")"
                          for s in done["steps"])
        items.append(item("timed steps", None, steps))
        kept = done.get("fine_tune") or {}  # held-out loss of merged16 against the trained run's (--verify)
        items.append(item("merged16 keeps the fine-tune", bool(kept) or None,
                          f"held-out loss {kept['merged16']:.4f} vs {kept['trained']:.4f} trained, base "
                          f"{kept['base']:.4f}" if kept else "no held-out loss recorded by the run: not checked"))
        # A random-weight model's two best logits are often closer than 16-bit arithmetic resolves, so on a GPU (the
        # merged model in bf16) f16 agreement below 100% is expected; a broken conversion agrees on next to nothing.
        # On a CPU (float32, the tiny model) f16 must agree as tests/test_export.py requires. Quantized types: reported.
        need = 0.95 if ctx.cpu else 0.5
        for quant, p in (done.get("parity") or {}).items():
            agree = (p["agree"] + p["ties"]) / max(p["total"], 1)
            ids_ok = p["prompt_ids_match"] == p["prompts"]
            items.append(item(f"parity {quant}", ids_ok and agree >= need if quant == "f16" else ids_ok,
                              f"prompt ids match {p['prompt_ids_match']}/{p['prompts']}; next-token agreement "
                              f"{p['agree']}/{p['total']}, ties {p['ties']}"
                              + (f" (needs {100 * need:.0f}% with the ties)" if quant == "f16" else "")
                              + f"; greedy replies identical {p['identical']}/{p['prompts']}"
                              + ("" if quant == "f16" else "; agreement of a quantized random-weight model is "
                                 "reported, not required")))
    # scripts/export.py with --base, as a user runs it
    explicit = ctx.work / "export" / "explicit"
    shutil.rmtree(explicit, ignore_errors=True)
    cli = ctx.run(f"{check.id}-cli", [ctx.python, "scripts/export.py", run_dir, "--to", "merged16", "--base", base16,
                                      "--out", explicit], timeout=1200)
    merged = (explicit / "merged16" / "config.json").is_file()
    items.append(item("scripts/export.py --to merged16 --base", cli["rc"] == 0 and merged,
                      f"exit {cli['rc']} in {cli['seconds']:.0f} s"
                      + ("" if cli["rc"] == 0 else f": {cli['tail'][-600:]}")))
    metrics["cli_seconds"] = cli["seconds"]
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": exported["log"]}
