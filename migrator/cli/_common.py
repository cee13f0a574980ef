"""Shared CLI pieces: the global options, the per-run state, the choices, and the one place where a
command's result or error becomes output and an exit code.

The global options (`--project`, `--json`, `--set` …) are declared once here and accepted before the
verb (the root callback) and after it (`command` adds them to every command): operators type
`graphrag-migrate status --json` as often as `graphrag-migrate --json status`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from typer.core import TyperGroup

from migrator.core.errors import ExitCode, MigrateError, from_os_error
from migrator.cli.output import Output

# ---- the global options, declared once ------------------------------------------------------------
_PROJECT_HELP = ("The GraphRAG repo root [default: the nearest of the current directory and its parents "
                 "holding migrate.yaml or .graphrag-migrate/, else the current directory].")
ProjectOpt = Annotated[Optional[Path], typer.Option("--project", "-p", help=_PROJECT_HELP, show_default=False)]
# Only the root reads the environment: a variable must not override a --project typed before the verb.
RootProjectOpt = Annotated[Optional[Path], typer.Option("--project", "-p", help=_PROJECT_HELP, show_default=False,
                                                        envvar="GRAPHRAG_MIGRATE_PROJECT")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings file (default: PROJECT/migrate.yaml).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Answer yes to every confirmation.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="More detail on stderr.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a setting: section.key=value (repeatable).")]
ForceUnlockOpt = Annotated[Optional[str], typer.Option("--force-unlock", metavar="ID", help="Remove the project lock with this id (see `status`).")]

# (parameter name in a command's signature, its alias, its default)
_GLOBAL_PARAMS = (("global_project", ProjectOpt, None), ("global_config", ConfigOpt, None),
                  ("global_json", JsonOpt, False), ("global_yes", YesOpt, False),
                  ("global_verbose", VerboseOpt, False), ("global_set", SetOpt, None),
                  ("global_force_unlock", ForceUnlockOpt, None))


@dataclass
class GlobalOptions:
    """The global options as typed in one place (before or after the verb)."""

    project: Optional[Path] = None
    config: Optional[Path] = None
    json: bool = False
    yes: bool = False
    verbose: bool = False
    set: list[str] = field(default_factory=list)
    force_unlock: Optional[str] = None

    def then(self, later: "GlobalOptions") -> "GlobalOptions":
        """These (before the verb) followed by `later` (after it): a value given later wins, flags add
        up, and the --set lists combine in order (so a later KEY overrides an earlier one)."""
        return GlobalOptions(project=later.project or self.project, config=later.config or self.config,
                             json=self.json or later.json, yes=self.yes or later.yes,
                             verbose=self.verbose or later.verbose, set=[*self.set, *later.set],
                             force_unlock=later.force_unlock or self.force_unlock)


def wants_json(argv: list[str]) -> bool:
    """`--json` anywhere on the command line (before a `--`): a usage error can stop typer before it has
    parsed the option, and the JSON contract still holds then."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


# ---- the per-run state ------------------------------------------------------------------------------
@dataclass
class AppState:
    """Built once per run by `build_state`, handed to the command through ctx.obj."""

    project: Path = Path(".")
    config: Optional[Path] = None
    overrides: dict = field(default_factory=dict)
    out: Output = field(default_factory=Output)
    yes: bool = False
    argv: str = ""
    unlocked: Any = None  # the lock --force-unlock removed (LockInfo), if any

    def settings(self, extra: dict | None = None):
        from migrator.app.api import settings_for

        return settings_for(self.project, self.config, {**self.overrides, **(extra or {})})


def build_state(options: GlobalOptions, out: Output) -> AppState:
    """The one place a run's state is made: secrets registered, --set parsed, a named lock removed."""
    from migrator.core.config import parse_set_options
    from migrator.core.secrets import register_from_environ

    register_from_environ()
    state = AppState(project=project_of(options, out), config=options.config, out=out, yes=options.yes,
                     argv=" ".join(["graphrag-migrate", *sys.argv[1:]]),
                     overrides=parse_set_options(options.set))
    if options.force_unlock:
        from migrator.app import api

        state.unlocked = api.force_unlock(state.project, options.force_unlock)
        out.info(f"removed {state.unlocked.describe()}")
    return state


def project_of(options: GlobalOptions, out: Output) -> Path:
    """--project (or $GRAPHRAG_MIGRATE_PROJECT) made absolute; without one, the project found by walking up
    from the cwd to the nearest migrate.yaml or .graphrag-migrate/ — said on stderr when it is not the cwd."""
    from migrator.app import api

    if options.project is not None:
        return api.project_root(options.project)
    found = api.find_project()
    if found.walked_up:
        out.info(f"using {found.describe()}")
    return found.root


def state_of(ctx: typer.Context) -> AppState:
    obj = ctx.obj
    if not isinstance(obj, AppState):  # called outside `command` (tests of a sub-app)
        obj = AppState(argv=" ".join(sys.argv[1:]))
        ctx.obj = obj
    return obj


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


# ---- results, errors and exit codes: one place --------------------------------------------------------
_BUG_FIX = "this is a bug in graphrag-migrate; re-run with --verbose and report it with .graphrag-migrate/audit.jsonl"
_INTERRUPTED_FIX = "run `graphrag-migrate status` to see where things stand"


def error_document(message: str, fix: str | None, code: ExitCode | int) -> dict:
    """What --json prints on stdout when a run fails before (or instead of) its result."""
    return {"ok": False, "error": message, "fix": fix, "exit_code": int(code)}


def exit_code_of(result: Any) -> ExitCode:
    """A command's result carries its status: `exit_code` when it has one, else `ok`; nothing is OK."""
    if result is None:
        return ExitCode.OK
    code = getattr(result, "exit_code", None)
    if code is not None:
        return ExitCode(int(code))
    return ExitCode.OK if result.ok else ExitCode.CHECK_FAILED


def run_command(options: GlobalOptions, ctx: typer.Context, call: Callable[[], Any]) -> None:
    """Build the state, run the command, exit with its result's code; domain errors become one message
    on stderr (and one JSON document with --json), an OS error nothing below mapped (permissions, a full
    disk) exit 3 with its file and errno, a bug exit 70. Usage errors (typer's) pass through to
    `CliGroup`, which reports them."""
    out = Output(options.json, options.verbose)
    try:
        ctx.obj = build_state(options, out)
        code = exit_code_of(call())
    except MigrateError as exc:
        out.error(exc.one_line())
        _error_data(out, exc.message, exc.fix, exc.exit_code)
        code = exc.exit_code
    except KeyboardInterrupt:
        out.error(f"interrupted — {_INTERRUPTED_FIX}")
        _error_data(out, "interrupted", _INTERRUPTED_FIX, ExitCode.INTERRUPTED)
        code = ExitCode.INTERRUPTED
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except OSError as exc:  # the environment's, not a bug: the file, the errno in words, the fix
        err = from_os_error(exc)
        out.error(err.one_line())
        _error_data(out, err.message, err.fix, err.exit_code)
        code = err.exit_code
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --verbose
        if out.verbose:
            import traceback

            out.err.print(traceback.format_exc(), markup=False)
        message = f"internal error: {type(exc).__name__}: {exc}"
        out.error(f"{message} — {_BUG_FIX}")
        _error_data(out, message, _BUG_FIX, ExitCode.INTERNAL)
        code = ExitCode.INTERNAL
    raise typer.Exit(int(code))


def _error_data(out: Output, message: str, fix: str | None, code: ExitCode) -> None:
    if out.json_mode and not out.data_emitted:
        out.data(error_document(message, fix, code))


def command(fn: Callable) -> Callable:
    """Make `fn` a command: the global options are added to it (after the verb), merged with the root's,
    and the command body runs under `run_command`. `fn` returns its result (or None), never exits."""
    signature = inspect.signature(fn, eval_str=True)
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=alias)
             for name, alias, default in _GLOBAL_PARAMS]
    params = [*signature.parameters.values(), *extra]

    @functools.wraps(fn)
    def wrapper(**kwargs):
        ctx: typer.Context = kwargs["ctx"]
        raw = {name.removeprefix("global_"): kwargs.pop(name) for name, _, _ in _GLOBAL_PARAMS}
        after = GlobalOptions(**{**raw, "set": raw["set"] or []})
        before = ctx.find_object(GlobalOptions) or GlobalOptions()
        run_command(before.then(after), ctx, lambda: fn(**kwargs))

    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


class CliGroup(TyperGroup):
    """The root command: usage errors (bad option, missing argument, bad choice, BadParameter) keep
    click's message on stderr and exit 2, and with --json also print the one JSON document on stdout."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = sys.argv[1:] if args is None else list(args)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except typer.TyperException as exc:
            exc.show()
            code = exc.exit_code
            if wants_json(argv):
                where = getattr(exc, "ctx", None)
                path = where.command_path if where is not None else "graphrag-migrate"
                _print_json(error_document(exc.format_message(), f"see `{path} --help`", code))
        except typer.Abort:
            typer.echo("Aborted!", err=True)
            code = ExitCode.CHECK_FAILED
            if wants_json(argv):
                _print_json(error_document("aborted", None, code))
        sys.exit(int(code) if isinstance(code, int) else 0)


def _print_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()
