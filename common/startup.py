"""What torch, bitsandbytes, datasets and Unsloth read only as they load: set before, by the first import of every
recipe, script and notebook. It imports nothing heavy itself, and a value the user set is kept.

- Idle OpenMP threads spin briefly, then sleep: GOMP_SPINCOUNT=2500, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is
  set. torch runs a CPU operation on a team of threads (its libgomp, one a core); a thread that has finished its
  share, or waits for the next operation, spins up to GOMP_SPINCOUNT turns before it sleeps: 300,000 by default,
  milliseconds. Alone on the CPU that costs nothing; beside other busy processes the spinning threads take the cores
  the working ones need, and a training step is thousands of small operations, each waiting: on 2 cores beside two
  busy torch processes the tiny run trained 8 steps in 195 s instead of 6.5 s with OMP_WAIT_POLICY=PASSIVE (no
  spinning). PASSIVE alone costs the idle case instead: each operation then waits for a sleeping thread to wake, and
  the tiny run trained 1.6 to 2.2x slower. 2,500 turns (about 60 microseconds there) was as fast as the default on
  the idle CPU and 1.35x PASSIVE's time beside two busy processes; dev/busy_neighbours.py measures both. libgomp
  reads the variable once, as it loads with torch, so it is set here, before; the processes a run starts (the GGUF
  converter, llama.cpp's load check, a benchmark's runs) inherit it. Every libgomp reads it: bitsandbytes' and
  llama.cpp's libraries link the one torch loaded (the same soname), sentencepiece loads a copy of its own.
- What libraries log as they load and a user of this project can do nothing about stays unsaid: torch's deprecation
  notice for torchao's enums (torchao registers them as pytree constants) and bitsandbytes' advice to `pip install
  kernels` (a kernel fetched from the hub; its own CPU kernels run without it). Each is the only message its logger
  writes, so that logger's level is raised; no other logger is touched.
- datasets' progress bars are off: TRL's trainer shows them for work of milliseconds ("Truncating train dataset",
  "Dropping fully masked examples"). Every other bar shows once its work has taken a second (TQDM_DELAY=1, which
  tqdm reads as it loads): transformers' "Loading weights" and "Writing model shards" take milliseconds on a small
  model and minutes on a large one, a download can take either. The training progress bar is transformers' own,
  and stays.
- unsloth_banner_hidden(), around `import unsloth`: Unsloth prints a banner as it loads and has no switch for it.
"""
import contextlib
import io
import logging
import os
import re
import sys

if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:  # the user's choice stands
    os.environ["GOMP_SPINCOUNT"] = "2500"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DELAY", "1")  # a bar for work that ends within a second is never drawn
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# Unsloth's banner: on a CPU "Unsloth 2026.10.9: no GPU found, training on CPU (...)", which a recipe says in its own
# words (`path: float32 LoRA, no quantisation on the CPU`); on a GPU its two "will patch" lines.
UNSLOTH_BANNER = re.compile(r"^Unsloth \S+: no GPU found, training on CPU|Unsloth: Will patch your computer|"
                            r"Unsloth Zoo will now patch everything")


@contextlib.contextmanager
def unsloth_banner_hidden():
    """The banner's lines are dropped; anything else Unsloth prints as it loads (a bitsandbytes that cannot load, GPUs
    of different kinds) is printed as it was, once the import is done."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        sys.stdout.write("".join(line for line in printed.getvalue().splitlines(keepends=True)
                                 if not UNSLOTH_BANNER.search(line)))
