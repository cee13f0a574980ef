"""The importable core API; the CLI is one client of it.

    from migrator.app import api
    report = api.check_phase("phase1", project=Path("."))
    report = api.rollback(project=Path("."))

Every function takes the project root and optional settings, and returns a report object with
`to_dict()`; errors are `migrator.core.errors.MigrateError` subclasses.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from migrator.app.status import StatusReport, gather_status
from migrator.core.config import CONFIG_FILENAME, Settings, anchor_paths, load_settings
from migrator.core.engine import Context, PhaseReport, check_phase as _check, dry_run_phase as _dry, run_phase as _run
from migrator.core.errors import ConfigError
from migrator.core.ledger import STATE_DIRNAME, Ledger
from migrator.core.ports import Reporter
from phases.rollback import RollbackReport, rollback as _rollback

PHASES = ("phase1", "phase2", "phase3", "phase4")  # the one phase list: CLI, rollback, status read it


def project_root(project: Path | str) -> Path:
    """The project root as every later path is built from it: absolute (`~` expanded, `..` folded), so
    that what is handed to compose, docker and the rendered files means the same whatever the cwd."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(project))))


@dataclasses.dataclass(frozen=True)
class FoundProject:
    root: Path
    marker: str | None  # what made it the project (migrate.yaml, .graphrag-migrate), None: the start itself
    start: Path

    @property
    def walked_up(self) -> bool:
        return self.marker is not None and self.root != self.start

    def describe(self) -> str:
        return f"project {self.root} ({self.marker} found above {self.start}; --project DIR picks another)"


def find_project(start: Path | None = None, home: Path | None = None) -> FoundProject:
    """The project of a run given no --project, found as git finds its repository: `start` (the cwd) or
    the nearest parent holding migrate.yaml or a .graphrag-migrate/ directory. The walk stops at the file
    system's root and does not climb into $HOME from below (like GIT_CEILING_DIRECTORIES=$HOME: a stray
    ~/migrate.yaml never captures every directory under it; $HOME itself is a project only when started
    there). Nothing found: `start` itself (a project where nothing happened yet, e.g. for `init`)."""
    start = project_root(start if start is not None else Path.cwd())
    home_env = home if home is not None else os.environ.get("HOME")
    ceiling = project_root(home_env) if home_env else None
    here = start
    while True:
        for marker in (CONFIG_FILENAME, STATE_DIRNAME):
            candidate = here / marker
            if candidate.is_file() if marker == CONFIG_FILENAME else candidate.is_dir():
                return FoundProject(here, marker, start)
        parent = here.parent
        if parent == here or parent == ceiling:
            return FoundProject(start, None, start)
        here = parent


def settings_for(project: Path, config: Path | None = None, overrides: dict | None = None) -> Settings:
    project = project_root(project)
    path = config if config is not None else project / CONFIG_FILENAME
    return load_settings(path, overrides=overrides, required=config is not None)


def build_phase(name: str, settings: Settings, options: dict | None = None):
    import importlib

    if name not in PHASES:
        raise ConfigError(f"unknown phase '{name}'", f"one of {', '.join(PHASES)}")
    module = importlib.import_module(f"phases.{name}")
    return module.build(settings, options or {})


def all_phases(settings: Settings) -> list:
    """Every phase, in order: what a rollback (the command's, or phase4's automatic one) undoes."""
    return [build_phase(n, settings, {}) for n in PHASES]


def context(project: Path, settings: Settings | None = None, out: Reporter | None = None, dry_run: bool = False,
            yes: bool = False, options: dict | None = None) -> Context:
    """A step context with the adapters migrate.yaml names plugged in (the runtimes, Docker)."""
    from migrator.adapters.runtime import wiring

    project = project_root(project)
    if not project.is_dir():
        raise ConfigError(f"project directory {project} does not exist", "pass --project DIR")
    settings = anchor_paths(settings or settings_for(project), project)
    plugged = wiring(settings)
    plugged.phases = all_phases
    return Context(project, settings, Ledger(project), out, dry_run, yes, options, plugged)


def check_phase(name: str, project: Path, settings: Settings | None = None, out: Reporter | None = None,
                options: dict | None = None) -> PhaseReport:
    """Run only the read-only checks of a phase. Writes nothing."""
    ctx = context(project, settings, out, options=options)
    ctx.ledger.load()  # refuses a corrupt state (StateCorrupt), never writes
    return _check(build_phase(name, ctx.settings, ctx.options), ctx)


def dry_run_phase(name: str, project: Path, settings: Settings | None = None, out: Reporter | None = None,
                  options: dict | None = None) -> PhaseReport:
    """The steps a phase would run, which are satisfied, and diffs of the files it would write."""
    ctx = context(project, settings, out, dry_run=True, options=options)
    ctx.ledger.load()
    return _dry(build_phase(name, ctx.settings, ctx.options), ctx)


def run_phase(name: str, project: Path, settings: Settings | None = None, out: Reporter | None = None,
              yes: bool = False, options: dict | None = None, command: str = "") -> PhaseReport:
    """Apply a phase under the project lock, resuming where an earlier run stopped."""
    ctx = context(project, settings, out, yes=yes, options=options)
    with ctx.ledger.locked(command or name):
        ctx.ledger.load()
        return _run(build_phase(name, ctx.settings, ctx.options), ctx)


def status(project: Path, settings: Settings | None = None, probe: bool = True) -> StatusReport:
    project = project_root(project)
    if not project.is_dir():  # a mistyped --project is not a project where nothing happened yet
        raise ConfigError(f"project directory {project} does not exist", "pass --project DIR")
    return gather_status(project, anchor_paths(settings or settings_for(project), project), probe=probe)


def rollback(project: Path, settings: Settings | None = None, out: Reporter | None = None,
             wait_s: float = 60.0, command: str = "rollback", now: bool = False) -> RollbackReport:
    """Back to Ollama (see phases.rollback). Takes the project lock. `now`: no drain and no grace period
    for the old backend (the 2 a.m. case): the answers in flight are cut, and the report says how many."""
    ctx = context(project, settings, out, options={"now": True} if now else None)
    with ctx.ledger.locked(command):
        return _rollback(ctx, all_phases(ctx.settings), wait_s=wait_s)


def force_unlock(project: Path, lock_id: str):
    return Ledger(project_root(project)).force_unlock(lock_id)


def init(project: Path, config: Path | None = None, overrides: dict | None = None, force: bool = False,
         dry_run: bool = False, yes: bool = False, use_compose: bool = True):
    """migrate.yaml from what the repo holds (see migrator.app.init); writes it unless dry_run."""
    from migrator.app.init import init_project

    return init_project(project_root(project), config, overrides, force=force, dry_run=dry_run, yes=yes,
                        use_compose=use_compose)


def render_k8s(project: Path, settings: Settings | None = None, options=None):
    """The vLLM deployment as Kubernetes manifests (see migrator.app.k8s): from migrate.yaml and what the
    ledger recorded (the pinned commit, adopted settings), read only; writes into `options.out` alone."""
    from migrator.app.k8s import render_k8s as _render
    from migrator.core.engine import apply_adopted_settings

    ctx = context(project, settings)
    ctx.ledger.load()  # refuses a corrupt state (StateCorrupt), never writes
    apply_adopted_settings(ctx)
    return _render(ctx, options)
