"""What the CLI prints where: at a terminal each step once (progress on stderr, a summary instead of the
table on stdout), on a pipe the table on stdout and progress on stderr; and `Output` as the core's Reporter
(confirm only at a terminal, a live-progress console only for a terminal)."""

import io
import json
import os
import pty
import subprocess
import sys

import pytest

from conftest import REPO
from migrator.cli import output as output_module
from migrator.cli.output import Output, same_terminal
from migrator.core.errors import ExitCode
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
        assert Output().confirm("about to: LLM_BACKEND=vllm", ["then: backend recreated", "  then: watched"]) is expected
    os.close(master)
    err = capsys.readouterr().err
    assert "about to: LLM_BACKEND=vllm" in err and "proceed? [y/N]" in err
    assert "\n  then: backend recreated\n" in err and "\n  then: watched\n" in err  # one indent, whatever was given


def test_progress_console_only_for_a_terminal(monkeypatch):
    assert Output().progress_console() is None  # stderr captured: not a terminal
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        out = Output()
        assert out.progress_console() is out.err
        assert Output(quiet=True).progress_console() is None
    os.close(master)


# ---- at a terminal each step once; on a pipe the table on stdout -------------------------------------------
def test_at_one_terminal_the_step_table_becomes_a_summary_line(sandbox, cli, monkeypatch):
    monkeypatch.setattr(output_module, "same_terminal", lambda *a: True)
    result = cli("--project", str(sandbox), "phase3", "--check")
    assert result.exit_code == ExitCode.CHECK_FAILED
    assert "phase3 — check" not in result.stdout and "┃ step" not in result.stdout  # no table
    assert result.stdout.startswith("phase3 check: FAILED — 9 steps: ") and "missing" in result.stdout
    assert "✗ env file has vLLM's endpoint" in result.stderr  # the steps were on the screen already


def test_at_one_terminal_a_dry_run_keeps_its_table_since_no_step_was_printed(sandbox, cli, monkeypatch):
    monkeypatch.setattr(output_module, "same_terminal", lambda *a: True)
    result = cli("--project", str(sandbox), "phase3", "--dry-run")
    assert result.exit_code == 0
    assert "phase3 — dry-run" in result.stdout and "+VLLM_MODEL=" in result.stdout  # table, then the diffs


def test_on_a_pipe_the_table_goes_to_stdout_and_progress_to_stderr(sandbox, cli):
    result = cli("--project", str(sandbox), "phase3", "--check")
    assert "phase3 — check" in result.stdout and "✗ env file has vLLM's endpoint" not in result.stdout
    assert "✗ env file has vLLM's endpoint" in result.stderr and "phase3 — check" not in result.stderr


def test_with_json_at_one_terminal_stdout_is_still_the_document(sandbox, cli, monkeypatch):
    monkeypatch.setattr(output_module, "same_terminal", lambda *a: True)
    result = cli("--project", str(sandbox), "--json", "phase3", "--check")
    assert len(json.loads(result.stdout)["steps"]) == 9


def test_same_terminal_is_true_only_for_one_tty_on_both_streams():
    master, slave = pty.openpty()
    other_master, other_slave = pty.openpty()
    read_end, write_end = os.pipe()
    tty = os.fdopen(slave, "w")
    other = os.fdopen(other_slave, "w")
    piped = os.fdopen(write_end, "w")
    try:
        assert same_terminal(tty, tty)
        assert not same_terminal(piped, tty) and not same_terminal(tty, piped)
        assert not same_terminal(tty, other)
        assert not same_terminal(io.StringIO(), io.StringIO())
    finally:
        for f in (tty, other, piped):
            f.close()
        for fd in (master, other_master, read_end):
            os.close(fd)


def run_in_a_terminal(*args: str) -> tuple[int, str]:
    """The real CLI with stdout and stderr on one pseudo-terminal, as an operator sees it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "migrator.cli.main", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"})
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(60), b"".join(chunks).decode(errors="replace")


def test_at_a_real_terminal_each_step_is_reported_once(sandbox):
    code, screen = run_in_a_terminal("--project", str(sandbox), "phase3", "--check")
    assert code == ExitCode.CHECK_FAILED, screen
    for title in ("vLLM service in its own compose file", "COMPOSE_FILE merges the vLLM file",
                  "env file has vLLM's endpoint (LLM_BACKEND unchanged)"):
        assert screen.count(title) == 1, screen
    assert "phase3 check: FAILED — 9 steps" in screen and "phase3 — check" not in screen
