"""The one line a user error prints (common/errors.py): whole, and on a line of its own."""
import pytest

from common.errors import UserError, report_user_errors


class Writes:
    """A stderr that keeps each write call apart."""

    def __init__(self):
        self.calls = []

    def write(self, text):
        self.calls.append(text)

    def flush(self):
        pass


def captured(monkeypatch, tmp_path) -> Writes:
    """Set in the test itself: pytest puts its own sys.stderr back between a fixture's setup and the test."""
    writes = Writes()
    monkeypatch.setattr("sys.stderr", writes)
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    monkeypatch.setattr("os._exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    return writes


def report(error: str) -> int:
    with pytest.raises(SystemExit) as exit_code:
        report_user_errors(UserError, UserError(error), None)
    return exit_code.value.code


def test_the_error_line_leaves_in_one_write(monkeypatch, tmp_path):
    """Both processes of a torchrun run print their line at once: print() wrote the text and its newline apart, so
    with PYTHONUNBUFFERED the two lines came out as "error: ...error: ...", one line, then two newlines."""
    stderr = captured(monkeypatch, tmp_path)
    assert report("data.jsonl:1: messages: no assistant turn") == 2
    assert len(stderr.calls) == 1 and stderr.calls[0].startswith("error: data.jsonl:1: ") \
        and stderr.calls[0].endswith("as their cause)\n"), stderr.calls


def test_a_progress_bar_stopped_mid_line_is_ended_first(monkeypatch, tmp_path):
    """A full disk at a checkpoint stops training with its bar mid-line: the error was printed after "6.72it/s]"."""
    import sys

    from tqdm import tqdm

    stderr = captured(monkeypatch, tmp_path)
    bar = tqdm(total=60, file=sys.stderr, mininterval=0, delay=0)  # drawn at once (common/startup.py: TQDM_DELAY)
    bar.update(30)
    assert report("the disk holding runs/x is full") == 2
    assert stderr.calls[-1].startswith("error: the disk holding")
    assert "".join(stderr.calls[:-1]).endswith("\n") and "30/60" in "".join(stderr.calls[:-1])
    assert bar not in getattr(tqdm, "_instances", ())
