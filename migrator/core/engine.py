"""The step engine: a phase is an ordered list of steps with one contract.

    check(ctx)    read-only: is the step's effect already in place?      -> Outcome
    plan(ctx)     what apply would do, in words (dry-run)               -> list[str]
    files(ctx)    files the step wants, {path: bytes} (dry-run shows the diff; apply writes them)
    apply(ctx)    make it so (idempotent: it may be re-run after a crash)
    verify(ctx)   read-only: did apply work?                              -> Outcome
    rollback(ctx) undo apply; safe to call when apply never ran            -> str

Running a phase skips steps whose check passes, so re-running is safe and a run killed at any
point resumes at the first step not in place. Each step's outcome goes to the ledger before the
next step starts; a step is marked `applying` before its apply, so a crash leaves a visible mark.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from migrator.core.config import Settings
from migrator.core.errors import CheckFailed, Interrupted, MigrateError
from migrator.core.fileops import FileChange, FileWriter
from migrator.core.ledger import Ledger, now_iso
from migrator.cli.output import Output


@dataclass
class Outcome:
    ok: bool
    message: str = ""
    fix: str = ""
    measurements: dict[str, Any] = field(default_factory=dict)
    warning: bool = False  # ok, but the operator should look (shown as "warn")

    @classmethod
    def passed(cls, message: str = "", **measurements: Any) -> "Outcome":
        return cls(True, message, measurements=measurements)

    @classmethod
    def warn(cls, message: str, **measurements: Any) -> "Outcome":
        """In place, but the operator should look (shown as "warn")."""
        return cls(True, message, measurements=measurements, warning=True)

    @classmethod
    def failed(cls, message: str, fix: str = "", **measurements: Any) -> "Outcome":
        return cls(False, message, fix, measurements)


class Context:
    """What a step sees: settings, project paths, the ledger, the file writer, adapters, output."""

    def __init__(self, project: Path, settings: Settings, ledger: Ledger, out: Output,
                 dry_run: bool = False, yes: bool = False, options: dict | None = None):
        self.project = project
        self.settings = settings
        self.ledger = ledger
        self.out = out
        self.dry_run = dry_run
        self.yes = yes
        self.options = options or {}
        self.writer = FileWriter(ledger, dry_run=dry_run)
        self.memo: dict[str, Any] = {}  # values several steps need in one run (model metadata)
        self._docker = None

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.project / p

    @property
    def env_path(self) -> Path:
        return self.path(self.settings.project.env_file)

    def read_env(self):
        """The project's env file as an EnvFile (as planned edits left it, in dry-run), or None if absent."""
        from migrator.files.envfile import EnvFile

        data = self.writer.read(self.env_path)
        return None if data is None else EnvFile.from_bytes(data)

    @property
    def compose_path(self) -> Path:
        return self.path(self.settings.project.compose_file)

    @property
    def docker(self):
        if self._docker is None:
            from migrator.adapters.docker import DockerRuntime

            self._docker = DockerRuntime()
        return self._docker

    @property
    def resources(self) -> dict:
        return self.ledger.state["resources"]


NOTHING_TO_UNDO = "nothing to undo"


class Step:
    """Base class; subclasses set `id`, `title`, `touches` and override what they need."""

    id: str = ""
    title: str = ""
    touches: str = ""  # files / containers the step changes, for --help and dry-run
    read_only: bool = False  # a check-only step (preflight): failing it stops the phase
    production: bool = False  # changes what production users get: asked first with --confirm

    def check(self, ctx: Context) -> Outcome:
        return Outcome.failed("not done")

    def plan(self, ctx: Context) -> list[str]:
        return [self.title]

    def files(self, ctx: Context) -> dict[Path, bytes]:
        return {}

    def apply(self, ctx: Context) -> Outcome | None:
        from migrator.core.fileops import unified_diff

        for path, data in self.files(ctx).items():
            before = ctx.writer.read(path)
            if before != data:  # the operator sees each change before it lands (secrets masked)
                ctx.out.info(unified_diff(ctx.ledger.relpath(path), before, data).rstrip("\n"))
            ctx.writer.write(path, data, self.id)
        return None

    def verify(self, ctx: Context) -> Outcome:
        return self.check(ctx)

    def rollback(self, ctx: Context) -> str:
        return NOTHING_TO_UNDO

    def recorded_pass(self, ctx: Context) -> "Outcome | None":
        """For steps whose only evidence is having run (a benchmark, a watch window): their earlier pass."""
        done = ctx.ledger.step(self.id.split(".")[0], self.id)
        if done.get("status") == "passed":
            return Outcome.passed(done.get("message", ""), **done.get("measurements", {}))
        return None


@dataclass
class Phase:
    name: str
    summary: str
    steps: list[Step]


@dataclass
class StepReport:
    id: str
    title: str
    status: str  # passed | satisfied | failed | missing | ok | would run | warn
    message: str = ""
    fix: str = ""
    measurements: dict = field(default_factory=dict)
    plan: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in ("", [], {})} | {"status": self.status}


@dataclass
class PhaseReport:
    phase: str
    mode: str  # check | dry-run | apply
    steps: list[StepReport] = field(default_factory=list)
    changes: list[FileChange] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status in ("passed", "satisfied", "ok", "warn", "would run", "would check")
                   for s in self.steps) and (
            self.mode != "check" or all(s.status in ("ok", "warn", "satisfied") for s in self.steps)
        )

    def to_dict(self) -> dict:
        return {
            "phase": self.phase,
            "mode": self.mode,
            "ok": self.ok,
            "steps": [s.to_dict() for s in self.steps],
            "diffs": [{"file": c.rel, "diff": c.diff()} for c in self.changes],
        }


def _safe(fn: Callable[[], Outcome], step: Step) -> Outcome:
    """A domain error inside a check (daemon down, file unreadable) is a failed check, not a crash."""
    try:
        return fn()
    except MigrateError as exc:
        return Outcome.failed(exc.message, exc.fix or "")


def check_phase(phase: Phase, ctx: Context) -> PhaseReport:
    """`--check`: only the read-only checks; writes nothing, not even the ledger."""
    report = PhaseReport(phase.name, "check")
    for step in phase.steps:
        res = _safe(lambda: step.check(ctx), step)
        status = ("warn" if res.warning else "ok") if res.ok else "missing"
        report.steps.append(StepReport(step.id, step.title, status, res.message, res.fix, res.measurements))
        ctx.out.step(status, step.title, res.message if not res.ok or res.warning else "")
    return report


def dry_run_phase(phase: Phase, ctx: Context) -> PhaseReport:
    """`--dry-run`: the ordered steps, which are satisfied, and the diff of every file to be written."""
    report = PhaseReport(phase.name, "dry-run")
    pending = False  # a step before this one would change something: later checks cannot be judged yet
    for step in phase.steps:
        res = _safe(lambda: step.check(ctx), step)
        if res.ok:
            report.steps.append(StepReport(step.id, step.title, "satisfied", res.message))
            continue
        if step.read_only:
            status = "would check" if pending else "failed"
            report.steps.append(StepReport(step.id, step.title, status, res.message, res.fix,
                                           res.measurements))
            continue
        pending = True
        try:
            plan = step.plan(ctx)
            for path, data in step.files(ctx).items():
                ctx.writer.write(path, data, step.id)
        except MigrateError as exc:
            report.steps.append(StepReport(step.id, step.title, "failed", exc.message, exc.fix or ""))
            continue
        report.steps.append(StepReport(step.id, step.title, "would run", res.message, plan=plan))
    report.changes = list(ctx.writer.planned)
    return report


def _confirm(ctx: Context, phase: Phase, step: Step) -> None:
    """--confirm: ask on the terminal before the run's first production change; never wait on a pipe.

    One answer covers the production steps that follow it in this run (the switch, the recreate, the
    watch are one change to the operator): they are listed in the question."""
    import sys

    if ctx.memo.get("confirmed"):
        return
    if not sys.stdin.isatty():
        raise CheckFailed(f"{phase.name}: '{step.title}' needs confirmation and stdin is not a terminal",
                          "run it at a terminal, or pass --yes")
    later = phase.steps[phase.steps.index(step) + 1:]
    ctx.out.info(f"about to: {step.title} ({'; '.join(_safe_plan(step, ctx))})")
    for other in (s for s in later if s.production):
        ctx.out.info(f"  then: {other.title}")
    ctx.out.err.print("proceed? [y/N] ", end="")
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CheckFailed(f"{phase.name}: stopped before '{step.title}' (not confirmed)",
                          f"re-run `graphrag-migrate {phase.name} --confirm` when ready (it resumes here)")
    ctx.memo["confirmed"] = True


def _safe_plan(step: Step, ctx: Context) -> list[str]:
    try:
        return step.plan(ctx)
    except MigrateError as exc:
        return [f"(plan unavailable: {exc.message})"]


class _Terminated(BaseException):
    pass


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through subprocess tests
    raise _Terminated()


def run_phase(phase: Phase, ctx: Context) -> PhaseReport:
    """Apply a phase: skip what is in place, apply and verify the rest, record every outcome."""
    report = PhaseReport(phase.name, "apply")
    ledger = ctx.ledger
    record = ledger.phase(phase.name)
    record.update({"status": "in_progress", "started_at": now_iso()})
    record.pop("finished_at", None)
    ledger.save()
    ledger.audit(phase.name, "phase-start", "ok")
    # SIGTERM ends a phase as Ctrl-C does; only the main thread may set handlers (the API runs in threads too).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    current: Step | None = None
    try:
        for step in phase.steps:
            current = step
            res = _safe(lambda: step.check(ctx), step)
            if res.ok:
                earlier = ledger.step(phase.name, step.id).get("status")
                status = "passed" if step.read_only or earlier == "passed" else "satisfied"
                ledger.record_step(phase.name, step.id, status, res.message,
                                   measurements=res.measurements or None)
                ctx.out.step(status if not res.warning else "warn", step.title, res.message)
                report.steps.append(StepReport(step.id, step.title, status, res.message, res.fix,
                                               res.measurements))
                continue
            if step.read_only:
                _fail(ctx, phase, step, report, res)
            if step.production and ctx.options.get("confirm") and not ctx.yes:
                _confirm(ctx, phase, step)
            ledger.record_step(phase.name, step.id, "applying", "started")
            ctx.out.step("running", step.title)
            if ctx.out.verbose:
                for line in _safe_plan(step, ctx):
                    ctx.out.detail(f"    {line}")
            try:
                applied = step.apply(ctx)
            except MigrateError as exc:
                _fail(ctx, phase, step, report, Outcome.failed(exc.message, exc.fix or ""), exc)
            if applied is not None and not applied.ok:
                _fail(ctx, phase, step, report, applied)
            verified = _safe(lambda: step.verify(ctx), step)
            if not verified.ok:
                _fail(ctx, phase, step, report, verified)
            measurements = {**(applied.measurements if applied else {}), **verified.measurements}
            message = applied.message if applied is not None and applied.message else verified.message
            ledger.record_step(phase.name, step.id, "passed", message, measurements=measurements or None)
            ctx.out.step("passed", step.title, message)
            report.steps.append(StepReport(step.id, step.title, "passed", message, "", measurements))
        record.update({"status": "completed", "finished_at": now_iso()})
        ledger.save()
        ledger.audit(phase.name, "phase-end", "completed")
        return report
    except (KeyboardInterrupt, _Terminated):
        if current is not None:
            ledger.record_step(phase.name, current.id, "interrupted", "interrupted by the operator")
        record.update({"status": "interrupted", "finished_at": now_iso()})
        ledger.save()
        raise Interrupted(
            f"{phase.name} interrupted during '{current.title if current else '?'}'",
            f"re-run `graphrag-migrate {phase.name}` to resume, or `graphrag-migrate rollback`",
        ) from None
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _fail(ctx: Context, phase: Phase, step: Step, report: PhaseReport, res: Outcome,
          cause: MigrateError | None = None) -> None:
    ctx.ledger.record_step(phase.name, step.id, "failed", res.message, fix=res.fix or None,
                           measurements=res.measurements or None)
    record = ctx.ledger.phase(phase.name)
    record.update({"status": "failed", "finished_at": now_iso(), "failed_step": step.id})
    ctx.ledger.save()
    ctx.ledger.audit(phase.name, "phase-end", "failed", failed_step=step.id)
    ctx.out.step("failed", step.title, res.message)
    report.steps.append(StepReport(step.id, step.title, "failed", res.message, res.fix, res.measurements))
    if cause is not None:
        raise cause
    raise CheckFailed(f"{phase.name}: {step.title} failed: {res.message}",
                      res.fix or f"fix it and re-run `graphrag-migrate {phase.name}` (it resumes here)")


def rollback_phase(phase: Phase, ctx: Context) -> list[tuple[str, str]]:
    """Undo a phase's steps in reverse order; each rollback is safe when apply never ran."""
    done = []
    for step in reversed(phase.steps):
        if step.read_only:
            continue
        if not ctx.ledger.step(phase.name, step.id):
            continue
        try:
            result = step.rollback(ctx)
        except MigrateError as exc:
            result = f"failed: {exc.one_line()}"
        ctx.ledger.audit(step.id, "rollback", "failed" if result.startswith("failed") else "ok", message=result)
        if result != NOTHING_TO_UNDO:
            done.append((step.id, result))
    return done
