"""What a run records about its training: the wall time of each step (StepTimer, for the log and the LoRA
comparison) and the loss curve (loss.png in the run directory)."""
import statistics
import time
from pathlib import Path

from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step. The first steps include compilation and warm-up, so the median
    of the rest is the number to compare."""

    def __init__(self):
        self.seconds, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)

    def median(self, warmup: int = 2) -> float | None:
        steady = self.seconds[warmup:] or self.seconds
        return statistics.median(steady) if steady else None


def save_loss_plot(log_history: list[dict], path, title: str | None = None) -> Path | None:
    """Plot the training loss (and eval loss, if logged) against the optimizer step from a Trainer's
    `state.log_history`; write a PNG to `path`. Returns the path, or None when no loss was logged."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed: works on servers, in Colab and in tests
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if not train and not evals:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="training loss", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (trained tokens)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
