"""Runs started by `accelerate launch` or `torchrun`: one process per GPU (or per CPU worker, with gloo).

The launcher sets WORLD_SIZE, RANK and LOCAL_RANK. The Trainer then trains each process on its own shard of every
batch and averages the gradients (DDP), or shards the model too (FSDP, from accelerate's config). Only the main
process prints (the others' standard output is dropped, their errors still show) and only it writes the run
directory: the adapter, run_config.json, plots, eval.json and exports. Checkpoints are the Trainer's (it writes them
from the main process) and --resume works as in one process.
"""
import dataclasses
import hashlib
import os
import sys


@dataclasses.dataclass
class Launch:
    processes: int
    rank: int
    backend: str | None
    fsdp: bool = False  # accelerate launch with an FSDP config (configs/fsdp_qlora.yaml): the model is sharded

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_processes() -> Launch:
    """Join the launcher's process group, if there is one, and print `distributed: N processes (BACKEND)` once."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") or bool(os.environ.get("FSDP_VERSION"))
    if processes <= 1:
        return Launch(1, 0, None, fsdp)
    import torch

    if not torch.distributed.is_initialized():  # the Trainer would do it later; the run directory needs it now
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        recipe_hook = sys.excepthook
        torch.distributed.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        keep_user_errors_visible(recipe_hook)
    launch = Launch(processes, torch.distributed.get_rank(), torch.distributed.get_backend(), fsdp)
    if not torch.cuda.is_available():
        # accelerate names each CPU process's device "cpu:0", and the Trainer resumes with torch.load(map_location=
        # that device), which torch cannot map ("don't know how to restore data location"): read it as plain CPU.
        torch.serialization.register_package(
            0, lambda obj: None, lambda obj, location: obj if str(location).startswith("cpu:") else None)
    if not launch.is_main:
        sys.stdout = open(os.devnull, "w")  # one log, the main process's; errors go to stderr from every process
    print(f"distributed: {processes} processes ({launch.backend})" + (", FSDP" if fsdp else ""))
    return launch


def keep_user_errors_visible(recipe_hook):
    """init_process_group installs an excepthook that prefixes each line with [rankN]: it sends the recipe's hook's
    output to a buffer and writes the buffer once that hook returns. report_user_errors never returns (os._exit(2)),
    so under torchrun a data error printed nothing at all. A UserError goes to the recipe's hook directly; anything
    else (a bug) keeps torch's rank-prefixed traceback."""
    from common.errors import UserError

    torch_hook = sys.excepthook
    if torch_hook is recipe_hook:
        return

    def excepthook(exc_type, exc, tb):
        (recipe_hook if issubclass(exc_type, UserError) else torch_hook)(exc_type, exc, tb)
    sys.excepthook = excepthook


def from_main(launch: Launch, make):
    """make() on the main process, its result handed to every process (the run directory the main one created)."""
    if launch.processes == 1:
        return make()
    import torch

    value = [make() if launch.is_main else None]
    torch.distributed.broadcast_object_list(value, src=0)
    return value[0]


class ShardRecorder:
    """Fingerprints of the sequences each process trains on, to show that the processes see different data."""

    def __init__(self):
        self.seen = set()

    def __call__(self, module, args, kwargs):
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None or not module.training:
            return
        for row in range(ids.shape[0]):
            tokens = ids[row][mask[row].bool()] if mask is not None and mask.dim() == 2 else ids[row]
            self.seen.add(hashlib.sha1(tokens.cpu().numpy().tobytes()).hexdigest()[:16])

    def report(self, launch: Launch) -> list[int]:
        """Print how many sequences each process trained and how many two processes shared; return the counts."""
        import torch

        everyone = [None] * launch.processes
        torch.distributed.all_gather_object(everyone, sorted(self.seen))
        counts = [len(seen) for seen in everyone]
        shared = sum(len(set(a) & set(b)) for i, a in enumerate(everyone) for b in everyone[i + 1:])
        print(f"distributed: sequences trained per process {counts}, {shared} trained by more than one process")
        return counts
