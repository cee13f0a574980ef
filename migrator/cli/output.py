"""stdout carries data, stderr carries everything else.

One `Output` is built per run by the CLI and handed down; it is the CLI's `Reporter`
(`migrator.core.ports`). `--json` makes `data` print exactly one JSON document on stdout; without it,
`data` renders tables on stdout. Messages, progress and questions go to stderr, plain lines when stderr
is not a terminal. User text is never parsed as rich markup.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Iterable

from migrator.cli import styles
from migrator.core.secrets import redact


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed, or not a real file (CliRunner's buffers)
        return False


def same_terminal(stdout=None, stderr=None) -> bool:
    """True when stdout and stderr are both the one terminal the operator is looking at.

    Then what went to stderr as progress is already on the screen above whatever stdout prints next;
    a redirect of either (`> file`, `| less`, `2> log`) makes them two places again."""
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    if not (_isatty(stdout) and _isatty(stderr)):
        return False
    try:
        return os.path.samestat(os.fstat(stdout.fileno()), os.fstat(stderr.fileno()))
    except (AttributeError, ValueError, OSError):
        return False


class Output:
    def __init__(self, json_mode: bool = False, verbose: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.verbose = verbose
        self.quiet = quiet
        self._err = None
        self._out = None
        self.data_emitted = False
        self._steps_shown: set[str] = set()  # titles of the steps printed as progress lines

    @property
    def err(self):
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
        return self._err

    @property
    def out(self):
        if self._out is None:
            from rich.console import Console

            self._out = Console(file=sys.stdout, markup=False, highlight=False, soft_wrap=True)
        return self._out

    # ---- messages (stderr) ------------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(redact(message))

    def detail(self, message: str) -> None:
        if self.verbose:
            self.err.print(redact(message), style="dim")

    def warn(self, message: str) -> None:
        self.err.print(f"warning: {redact(message)}", style="yellow")

    def error(self, message: str) -> None:
        self.err.print(f"error: {redact(message)}", style="bold red")

    def step(self, status: str, title: str, message: str = "") -> None:
        line = f"{styles.mark(status)} {title}" + (f": {message}" if message else "")
        if not self.quiet:
            self.err.print(redact(line), style=styles.style(status))
            self._steps_shown.add(title)

    def confirm(self, question: str, details: list[str]) -> bool | None:
        """Ask at the terminal; None when nobody can answer (stdin not a terminal, --json, quiet), so the
        caller refuses instead of waiting on a pipe. Only "y" or "yes" is a yes."""
        if self.json_mode or self.quiet or not _isatty(sys.stdin):
            return None
        self.err.print(redact(question))
        for line in details:  # indented under the question, however the caller indented them
            self.err.print(f"  {redact(line.lstrip())}")
        self.err.print("proceed? [y/N] ", end="")
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    def progress_console(self):
        """stderr's console for live progress (downloads) when it is a terminal; None on a pipe or quiet."""
        if self.quiet or not self.err.is_terminal:
            return None
        return self.err

    def steps_on_screen(self, titles: Iterable[str]) -> bool:
        """Whether a table of these steps would only repeat what the operator just read: each was printed
        as a progress line, and stdout is the same terminal as stderr (not --json, not a pipe or file)."""
        titles = list(titles)
        return (not self.json_mode and bool(titles) and all(t in self._steps_shown for t in titles)
                and same_terminal())

    # ---- data (stdout) ----------------------------------------------------------------------
    def data(self, document: Any, render: Callable[[Any], None] | None = None) -> None:
        """Print the command's result: one JSON document with --json, else `render(console)`."""
        self.data_emitted = True
        if self.json_mode:
            sys.stdout.write(json.dumps(redact(document), indent=2, sort_keys=True, default=str) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.out)

    def text(self, text: str) -> None:
        """Raw text on stdout (diffs), not interpreted in any way."""
        sys.stdout.write(redact(text))
        sys.stdout.flush()
