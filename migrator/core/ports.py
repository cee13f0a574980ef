"""The ports the core talks through; adapters implement them and the app layer plugs them in.

The engine and the phases never touch a terminal, a Docker daemon or a process table directly: they
ask a `Reporter` (messages, progress, confirmation), a `VllmRuntime` (where vLLM runs: a container, a
local process; a Kubernetes one later) and a `BackendRuntime` (how the backend re-reads its env file).
Adding a runtime means one adapter file implementing the protocol plus its config choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable


@runtime_checkable
class Reporter(Protocol):
    """Where progress and messages go (stderr at a terminal; nowhere for the importable API)."""

    verbose: bool

    def info(self, message: str) -> None: ...

    def detail(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...

    def step(self, status: str, title: str, message: str = "") -> None: ...

    def confirm(self, question: str, details: list[str]) -> bool | None:
        """True/False as the operator answered; None when nobody can be asked (no terminal, --json)."""
        ...

    def progress_console(self) -> Any | None:
        """A rich Console for live progress (downloads) when attached to a terminal, else None."""
        ...


class QuietReporter:
    """The importable API's default: says nothing, can ask nobody."""

    verbose = False

    def info(self, message: str) -> None:
        pass

    def detail(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def step(self, status: str, title: str, message: str = "") -> None:
        pass

    def confirm(self, question: str, details: list[str]) -> bool | None:
        return None

    def progress_console(self) -> Any | None:
        return None
