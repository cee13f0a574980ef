"""`Output` as the core's Reporter: confirm only at a terminal, a live-progress console only for a terminal."""

import io
import os
import pty
import sys

import pytest

from migrator.cli.output import Output
from migrator.core.ports import Reporter


# ---- Output is the core's Reporter ---------------------------------------------------------------------------
def test_output_implements_the_reporter_protocol():
    out = Output()
    assert isinstance(out, Reporter)
    for name in ("info", "detail", "warn", "error", "step", "confirm", "progress_console"):
        assert callable(getattr(out, name))


def test_confirm_cannot_ask_without_a_terminal_or_with_json(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert Output().confirm("about to: switch", ["then: recreate"]) is None
    assert sys.stdin.read() == "y\n"  # nothing was read from the pipe
    master, slave = pty.openpty()
    with os.fdopen(slave, "r") as tty:
        monkeypatch.setattr(sys, "stdin", tty)
        assert Output(json_mode=True).confirm("about to: switch", []) is None
    os.close(master)
    assert capsys.readouterr().err == ""  # nobody asked, nothing shown


@pytest.mark.parametrize("answer, expected", [(b"y\n", True), (b"yes\n", True), (b"n\n", False), (b"\n", False)])
def test_confirm_at_a_terminal_shows_the_question_and_reads_the_answer(monkeypatch, capsys, answer, expected):
    master, slave = pty.openpty()
    os.write(master, answer)
    with os.fdopen(slave, "r") as tty:
        monkeypatch.setattr(sys, "stdin", tty)
        assert Output().confirm("about to: LLM_BACKEND=vllm", ["then: backend recreated"]) is expected
    os.close(master)
    err = capsys.readouterr().err
    assert "about to: LLM_BACKEND=vllm" in err and "  then: backend recreated" in err and "proceed? [y/N]" in err


def test_progress_console_only_for_a_terminal(monkeypatch):
    assert Output().progress_console() is None  # stderr captured: not a terminal
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        out = Output()
        assert out.progress_console() is out.err
        assert Output(quiet=True).progress_console() is None
    os.close(master)

