"""stdout carries data, stderr carries everything else.

One `Output` is built by the CLI's root callback and handed down. `--json` makes `data` print exactly
one JSON document on stdout; without it, `data` renders tables on stdout. Messages and progress go
to stderr, plain lines when stderr is not a terminal. User text is never parsed as rich markup.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

from migrator.cli import styles
from migrator.core.secrets import redact


class Output:
    def __init__(self, json_mode: bool = False, verbose: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.verbose = verbose
        self.quiet = quiet
        self._err = None
        self._out = None
        self.data_emitted = False

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
