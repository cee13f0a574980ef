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


@dataclass
class StartedVllm:
    """A vLLM the runtime just started: how to tell it died and where its log is, while waiting for it."""

    alive: Callable[[], str | None]  # None while it runs, else why it stopped
    logs: Callable[[], str]


class VllmRuntime(Protocol):
    """Where vLLM runs. phase1 starts it, phase3 may hand it to compose, rollback stops it."""

    name: str
    under_compose: bool  # phase3 hands it to a compose service (and staging can run a second one)

    def check(self, ctx) -> Any:
        """phase1's 'runtime reachable' check -> Outcome."""
        ...

    def start_plan(self, ctx) -> list[str]: ...

    def start(self, ctx, record: dict) -> StartedVllm:
        """Start vLLM — or adopt the one of ours an interrupted run left starting; `record`
        (ctx.resources["vllm"]) is saved before its readiness is awaited."""
        ...

    def stop(self, ctx, record: dict, state_known: bool) -> list[str]:
        """Stop the vLLM graphrag-migrate started (or, with the state lost, the one its settings name), and
        any other of ours its marker finds (a container label; a pidfile or environment marker)."""
        ...

    def running_ours(self, ctx) -> list[str]:
        """The vLLMs of this project graphrag-migrate started that run now, recorded or not."""
        ...

    def untracked(self, settings, state_dir, record: dict, probe: bool) -> list[str]:
        """status: vLLMs of ours running that state.json does not record (an interrupted start): problems."""
        ...

    def describe(self, record: dict, settings, probe: bool) -> dict:
        """status: what runs, from the recorded resource."""
        ...

    def model_arg(self, settings, project, downloaded: dict | None) -> str:
        """The --model vLLM is given on this runtime."""
        ...

    def backend_base_url(self, settings) -> str:
        """VLLM_BASE_URL as the backend sees vLLM on this runtime."""
        ...


class BackendRuntime(Protocol):
    """How the backend picks up a changed env file."""

    name: str
    recreates: bool  # True: a recreate (not a restart) makes it re-read the env file

    def recreate_plan(self, ctx) -> list[str]: ...

    def recreate(self, ctx, compose=None, grace_s: float | None = None,
                 at_stop: Callable[[], None] | None = None) -> tuple[bool, str]:
        """Recreate the backend; the old one gets `grace_s` (default `deploy.stop_grace_s`; 0 with `--now`)
        between SIGTERM and SIGKILL to finish the answers in flight. `at_stop` is called as late as the runtime
        can before the old one is stopped (the switch waits there for a moment with no answer in flight)."""
        ...


@dataclass
class Wiring:
    """The adapters a Context is given by the app layer (tests may give fakes)."""

    vllm: VllmRuntime | None = None
    backend: BackendRuntime | None = None
    docker: Callable[[], Any] | None = None  # builds the Docker adapter on first use
    phases: Callable[[Any], list] | None = None  # settings -> every phase (for phase4's automatic rollback)
    extra: dict = field(default_factory=dict)
