"""Step timing for the training log and the LoRA comparison."""
import statistics
import time

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
