"""The training loss curve as a PNG, for the run directory."""
from pathlib import Path


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
