"""Shared CLI pieces: the per-run state object, option aliases, and the one error handler."""

from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from migrator.core.errors import ExitCode, MigrateError
from migrator.cli.output import Output


@dataclass
class AppState:
    """Built once by the root callback, handed to every command through ctx.obj."""

    project: Path = Path(".")
    config: Optional[Path] = None
    overrides: dict = field(default_factory=dict)
    out: Output = field(default_factory=Output)
    yes: bool = False
    argv: str = ""

    def settings(self, extra: dict | None = None):
        from migrator.app.api import settings_for

        return settings_for(self.project, self.config, {**self.overrides, **(extra or {})})


# ---- choices ----------------------------------------------------------------------------------------
class Server(str, Enum):
    sim = "sim"
    vllm_cpu = "vllm-cpu"


class RehearsalRuntime(str, Enum):
    auto = "auto"
    process = "process"
    docker = "docker"


class Backend(str, Enum):
    vllm = "vllm"
    ollama = "ollama"


class Api(str, Enum):
    openai = "openai"
    ollama = "ollama"


def options_from(cls, params: dict):
    """A dataclass of a command's options from its parameters of the same names; choices as plain strings
    (the core takes strings, the Enums are the CLI's way of validating them)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v.value if isinstance(v, Enum) else v for k, v in params.items() if k in names})


CheckOpt = Annotated[bool, typer.Option("--check", help="Run only the read-only checks; write nothing. Non-zero exit if something is missing.")]
ConfirmOpt = Annotated[bool, typer.Option("--confirm", help="Ask at the terminal before each production change (--yes answers yes).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Show the ordered steps, which are satisfied, and a diff of every file it would write; write nothing.")]


def exit_with(code: ExitCode) -> None:
    raise typer.Exit(int(code))


def handle_errors(fn):
    """The one place where domain errors become a message on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx: typer.Context | None = kwargs.get("ctx")
        out: Output = ctx.obj.out if ctx is not None and isinstance(ctx.obj, AppState) else Output()
        try:
            return fn(*args, **kwargs)
        except MigrateError as exc:
            out.error(exc.one_line())
            if out.json_mode and not out.data_emitted:
                out.data({"ok": False, "error": exc.message, "fix": exc.fix,
                          "exit_code": int(exc.exit_code)})
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            out.error("interrupted — run `graphrag-migrate status` to see where things stand")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except Exception as exc:  # a bug: say so plainly, keep the traceback for --verbose
            if out.verbose:
                import traceback

                out.err.print(traceback.format_exc(), markup=False)
            out.error(f"internal error: {type(exc).__name__}: {exc} — this is a bug in graphrag-migrate; "
                      "re-run with --verbose and report it with .graphrag-migrate/audit.jsonl")
            raise typer.Exit(int(ExitCode.INTERNAL)) from None

    return wrapper


def state_of(ctx: typer.Context) -> AppState:
    obj = ctx.obj
    if not isinstance(obj, AppState):  # called without the root callback (tests of a sub-app)
        obj = AppState(argv=" ".join(sys.argv[1:]))
        ctx.obj = obj
    return obj
