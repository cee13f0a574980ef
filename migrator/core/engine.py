"""The step engine: a phase is an ordered list of steps with one contract.

    check(ctx)    read-only: is the step's effect already in place?      -> Outcome
    plan(ctx)     what apply would do, in words (dry-run)               -> list[str]
    files(ctx)    files the step wants, {path: bytes} (dry-run shows the diff; apply writes them)
    apply(ctx)    make it so (idempotent: it may be re-run after a crash)
    verify(ctx)   read-only: did apply work?                              -> Outcome
    undos()       how to take it back: `Undo`s, each with a stage        -> list[Undo]

Running a phase skips steps whose check passes, so re-running is safe and a run killed at any
point resumes at the first step not in place. Each step's outcome goes to the ledger before the
next step starts; a step is marked `applying` before its apply, so a crash leaves a visible mark.

Undo is paired with apply, as alembic pairs downgrade() with upgrade(): a mutating step says how its
effect is taken back, and at which stage of a rollback (files first, since they need only the disk;
then the backend drained and recreated, servers stopped, unloaded models reloaded, and last the probes that prove
where production is). An undo must be safe to run when apply never ran, and with the state lost.
Steps whose undo is the same action (three steps edit the env file) share one undo name; a rollback
runs it once.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any, Callable

from migrator.core.config import Settings
from migrator.core.errors import CheckFailed, EnvironmentMissing, Interrupted, MigrateError, from_os_error
from migrator.core.fileops import FileChange, FileWriter
from migrator.core.ledger import Ledger, now_iso
from migrator.core.ports import QuietReporter, Reporter, Wiring


class StepStatus(str, Enum):
    """What became of a step in a run (a str, so the ledger and --json carry the plain word)."""

    PASSED = "passed"            # applied and verified in this or an earlier run
    SATISFIED = "satisfied"      # already in place; nothing applied
    FAILED = "failed"
    MISSING = "missing"          # --check: not in place
    OK = "ok"                    # --check: in place
    WARN = "warn"                # in place, but look
    WOULD_RUN = "would run"      # --dry-run
    WOULD_CHECK = "would check"  # --dry-run: a check that can only be judged after earlier steps ran
    RUNNING = "running"
    APPLYING = "applying"        # marked before apply: a crash leaves it visible
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


GOOD = {StepStatus.PASSED, StepStatus.SATISFIED, StepStatus.OK, StepStatus.WARN, StepStatus.WOULD_RUN,
        StepStatus.WOULD_CHECK}


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
    """What a step sees: settings, project paths, the ledger, the file writer, the ports, the reporter."""

    def __init__(self, project: Path, settings: Settings, ledger: Ledger, out: Reporter | None = None,
                 dry_run: bool = False, yes: bool = False, options: dict | None = None,
                 wiring: Wiring | None = None):
        self.project = project
        self.settings = settings
        self.ledger = ledger
        self.out: Reporter = out if out is not None else QuietReporter()
        self.dry_run = dry_run
        self.yes = yes
        self.options = options or {}
        self.wiring = wiring or Wiring()
        self.writer = FileWriter(ledger, dry_run=dry_run)
        self.memo: dict[str, Any] = {}  # values several steps need in one run (model metadata)
        self.state_known = True  # rollback: False when state.json was lost or corrupt
        self.mode = "dry-run" if dry_run else "apply"  # check | dry-run | apply: set by the runner
        self._docker = None

    def derive(self, settings: Settings) -> "Context":
        """The same project, ledger, reporter and ports under other settings (staging's)."""
        derived = Context(self.project, settings, self.ledger, self.out, self.dry_run, self.yes, self.options,
                          self.wiring)
        derived.mode = self.mode
        return derived

    @property
    def recording(self) -> bool:
        """A real run: a read-only check may then write to the audit log (an acceptance), never in
        --check or --dry-run, which write nothing."""
        return self.mode == "apply" and not self.dry_run

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.project / p

    @property
    def env_path(self) -> Path:
        return self.path(self.settings.project.env_file)

    @property
    def compose_path(self) -> Path:
        return self.path(self.settings.project.compose_file)

    @property
    def vllm_runtime(self):
        if self.wiring.vllm is None:
            raise EnvironmentMissing("no vLLM runtime is wired into this run", "build the context with "
                                     "migrator.app.api.context() (it plugs in the runtime migrate.yaml names)")
        return self.wiring.vllm

    @property
    def backend_runtime(self):
        if self.wiring.backend is None:
            raise EnvironmentMissing("no backend runtime is wired into this run",
                                     "build the context with migrator.app.api.context()")
        return self.wiring.backend

    @property
    def docker(self):
        if self._docker is None:
            if self.wiring.docker is None:
                raise EnvironmentMissing("no Docker adapter is wired into this run",
                                         "build the context with migrator.app.api.context()")
            self._docker = self.wiring.docker()
        return self._docker

    @property
    def resources(self) -> dict:
        return self.ledger.state["resources"]


NOTHING_TO_UNDO = "nothing to undo"


class UndoStage(IntEnum):
    """A rollback's order: what needs only the disk first, the proofs last."""

    FILES = 1     # the env file and every file the tool wrote, restored
    RECREATE = 2  # the backend drained and recreated so it reads the restored env file — while vLLM still
    #               serves, so the answers in flight through the old backend finish on it
    STOP = 3      # servers the migration started (staging, vLLM), stopped
    RELOAD = 4    # Ollama models the migration unloaded, loaded again
    PROBE = 5     # where production is now, proven (bottom up: Ollama, then the backend)


UndoResult = tuple[bool, str]


@dataclass
class Undo:
    """One action of a rollback. `run(ctx)` returns (ok, what it did); a MigrateError it raises is a failed
    action (an environment one when something it needs is not there). Steps sharing `name` share the action."""

    stage: UndoStage
    name: str
    run: Callable[["Context"], UndoResult | list[tuple[str, bool, str]]]


class Step:
    """Base class; subclasses set `id`, `title`, `touches` and override what they need."""

    id: str = ""
    title: str = ""
    touches: str = ""  # files / containers the step changes, for --help and dry-run
    read_only: bool = False  # a check-only step (preflight): failing it stops the phase
    production: bool = False  # changes what production users get: asked first with --confirm
    observes: bool = False  # records measurements only (a benchmark, a watch window): nothing to undo

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
            ctx.writer.write(path, data, self.id, keys=self.keys_written(ctx, path) if before != data else ())
        return None

    def keys_written(self, ctx: Context, path: Path) -> list[str]:
        """The settings (env keys) a write to `path` sets: recorded, so that a rollback that cannot
        restore the file verbatim takes back only what the tool changed."""
        return []

    def verify(self, ctx: Context) -> Outcome:
        return self.check(ctx)

    def undos(self) -> list[Undo]:
        """How this step's effect is taken back; a step that changes nothing has none.

        The default for a step that only writes files (its `files()`): restore each file it first
        wrote, from the backup taken before, or remove it if the tool created it."""
        if type(self).files is Step.files:
            return []
        return [Undo(UndoStage.FILES, f"{self.id} files", self.restore_own_files)]

    def restore_own_files(self, ctx: Context) -> list[tuple]:
        return restore_files(ctx, [rel for rel, record in ctx.ledger.state["files"].items()
                                   if record.get("step") == self.id])

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
    status: StepStatus
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
        return all(s.status in GOOD for s in self.steps) and (
            self.mode != "check" or all(s.status in (StepStatus.OK, StepStatus.WARN, StepStatus.SATISFIED)
                                        for s in self.steps)
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
    """A domain error inside a check (daemon down, file unreadable) is a failed check, not a crash;
    so is an OS error (a directory where the env file should be)."""
    try:
        return fn()
    except MigrateError as exc:
        return Outcome.failed(exc.message, exc.fix or "")
    except OSError as exc:
        err = from_os_error(exc)
        return Outcome.failed(err.message, err.fix or "")


def check_phase(phase: Phase, ctx: Context) -> PhaseReport:
    """`--check`: only the read-only checks; writes nothing, not even the ledger."""
    apply_adopted_settings(ctx)
    report = PhaseReport(phase.name, "check")
    ctx.mode = report.mode
    for step in phase.steps:
        res = _safe(lambda: step.check(ctx), step)
        status = (StepStatus.WARN if res.warning else StepStatus.OK) if res.ok else StepStatus.MISSING
        report.steps.append(StepReport(step.id, step.title, status, res.message, res.fix, res.measurements))
        ctx.out.step(status, step.title, res.message if not res.ok or res.warning else "")
    return report


def dry_run_phase(phase: Phase, ctx: Context) -> PhaseReport:
    """`--dry-run`: the ordered steps, which are satisfied, and the diff of every file to be written."""
    apply_adopted_settings(ctx)
    report = PhaseReport(phase.name, "dry-run")
    ctx.mode = report.mode
    pending = False  # a step before this one would change something: later checks cannot be judged yet
    for step in phase.steps:
        res = _safe(lambda: step.check(ctx), step)
        if res.ok:
            report.steps.append(StepReport(step.id, step.title, StepStatus.SATISFIED, res.message))
            continue
        if step.read_only:
            status = StepStatus.WOULD_CHECK if pending else StepStatus.FAILED
            report.steps.append(StepReport(step.id, step.title, status, res.message, res.fix,
                                           res.measurements))
            continue
        pending = True
        try:
            plan = step.plan(ctx)
            for path, data in step.files(ctx).items():
                ctx.writer.write(path, data, step.id)
        except (MigrateError, OSError) as exc:
            err = exc if isinstance(exc, MigrateError) else from_os_error(exc)
            report.steps.append(StepReport(step.id, step.title, StepStatus.FAILED, err.message, err.fix or ""))
            continue
        report.steps.append(StepReport(step.id, step.title, StepStatus.WOULD_RUN, res.message, plan=plan))
    report.changes = list(ctx.writer.planned)
    return report


def _confirm(ctx: Context, phase: Phase, step: Step) -> None:
    """--confirm: ask before the run's first production change; the reporter asks, never the engine.

    One answer covers the production steps that follow it in this run (the switch, the recreate, the
    watch are one change to the operator): they are listed in the question."""
    if ctx.memo.get("confirmed"):
        return
    later = phase.steps[phase.steps.index(step) + 1:]
    answer = ctx.out.confirm(f"about to: {step.title} ({'; '.join(_safe_plan(step, ctx))})",
                             [f"then: {other.title}" for other in later if other.production])
    if answer is None:
        raise CheckFailed(f"{phase.name}: '{step.title}' needs confirmation and stdin is not a terminal",
                          "run it at a terminal, or pass --yes")
    if not answer:
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
    apply_adopted_settings(ctx)
    report = PhaseReport(phase.name, "apply")
    ctx.mode = report.mode
    ledger = ctx.ledger
    for note in ledger.notices:  # a stale lock taken over: the operator hears of it
        ctx.out.warn(note)
    ledger.notices.clear()
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
                status = StepStatus.PASSED if step.read_only or earlier == "passed" else StepStatus.SATISFIED
                ledger.record_step(phase.name, step.id, status, res.message,
                                   measurements=res.measurements or None)
                ctx.out.step(status if not res.warning else StepStatus.WARN, step.title, res.message)
                report.steps.append(StepReport(step.id, step.title, status, res.message, res.fix,
                                               res.measurements))
                continue
            if step.read_only:
                _fail(ctx, phase, step, report, res)
            if step.production and ctx.options.get("confirm") and not ctx.yes:
                _confirm(ctx, phase, step)
            ledger.record_step(phase.name, step.id, StepStatus.APPLYING, "started")
            ctx.out.step(StepStatus.RUNNING, step.title)
            if ctx.out.verbose:
                for line in _safe_plan(step, ctx):
                    ctx.out.detail(f"    {line}")
            try:
                applied = step.apply(ctx)
            except (MigrateError, OSError) as exc:  # an OS error is the environment's: recorded, not "applying"
                err = exc if isinstance(exc, MigrateError) else from_os_error(exc)
                _fail(ctx, phase, step, report, Outcome.failed(err.message, err.fix or ""), err)
            if applied is not None and not applied.ok:
                _fail(ctx, phase, step, report, applied)
            verified = _safe(lambda: step.verify(ctx), step)
            if not verified.ok:
                _fail(ctx, phase, step, report, verified)
            measurements = {**(applied.measurements if applied else {}), **verified.measurements}
            message = applied.message if applied is not None and applied.message else verified.message
            ledger.record_step(phase.name, step.id, StepStatus.PASSED, message, measurements=measurements or None)
            ctx.out.step(StepStatus.PASSED, step.title, message)
            report.steps.append(StepReport(step.id, step.title, StepStatus.PASSED, message, "", measurements))
        record.update({"status": "completed", "finished_at": now_iso()})
        ledger.save()
        ledger.audit(phase.name, "phase-end", "completed")
        return report
    except (KeyboardInterrupt, _Terminated):
        if current is not None:
            ledger.record_step(phase.name, current.id, StepStatus.INTERRUPTED, "interrupted by the operator")
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
    try:
        ctx.ledger.record_step(phase.name, step.id, StepStatus.FAILED, res.message, fix=res.fix or None,
                               measurements=res.measurements or None)
        record = ctx.ledger.phase(phase.name)
        record.update({"status": "failed", "finished_at": now_iso(), "failed_step": step.id})
        ctx.ledger.save()
        ctx.ledger.audit(phase.name, "phase-end", "failed", failed_step=step.id)
    except MigrateError as unrecorded:  # the ledger cannot be written either (a full disk): keep the cause
        if cause is None:
            raise
        cause.fix = f"{cause.fix or 'fix it and re-run'} (not recorded: {unrecorded.message})"
    ctx.out.step(StepStatus.FAILED, step.title, res.message)
    report.steps.append(StepReport(step.id, step.title, StepStatus.FAILED, res.message, res.fix, res.measurements))
    if cause is not None:
        raise cause
    raise CheckFailed(f"{phase.name}: {step.title} failed: {res.message}",
                      res.fix or f"fix it and re-run `graphrag-migrate {phase.name}` (it resumes here)")


ADOPTED_SETTINGS = "adopted_settings"  # ledger resource: settings a step adopted in place of migrate.yaml's


def adopt_settings(ctx: Context, changes: dict, step: str) -> None:
    """Use these values ({"vllm.KEY": value}) instead of migrate.yaml's for the rest of the migration
    (phase1 --apply-fit-advice). Recorded with the value each replaces: later runs use them for as long
    as migrate.yaml still says that value (an operator who edits it is obeyed), and a rollback forgets them."""
    adopted = ctx.resources.setdefault(ADOPTED_SETTINGS, {})
    configured = ctx.memo.setdefault("configured_settings", {})
    for key, value in changes.items():
        section, name = key.split(".", 1)
        holder = getattr(ctx.settings, section)
        configured.setdefault(key, getattr(holder, name))
        adopted[key] = {"configured": configured[key], "value": value, "step": step, "at": now_iso()}
        setattr(holder, name, value)
    ctx.ledger.save()
    ctx.ledger.audit(step, "settings-adopted", "ok", settings={k: v["value"] for k, v in adopted.items()})


def apply_adopted_settings(ctx: Context) -> None:
    """At the start of every phase run: the recorded adopted settings, where migrate.yaml still says
    what it said when they were adopted."""
    for key, entry in (ctx.resources.get(ADOPTED_SETTINGS) or {}).items():
        section, name = key.split(".", 1)
        holder = getattr(ctx.settings, section, None)
        if holder is not None and getattr(holder, name, None) == entry.get("configured"):
            ctx.memo.setdefault("configured_settings", {})[key] = entry["configured"]
            setattr(holder, name, entry["value"])


def restore_files(ctx: Context, rels: list[str]) -> list[tuple]:
    """Restore these recorded files (see FileWriter.restore), one action each, named `file <rel>`: a file
    that cannot be written (immutable, full disk) is a failed action of the environment's, the next one
    is still restored — (name, False, why, True)."""
    out: list[tuple] = []
    for rel in sorted(rels):
        try:
            result = ctx.writer.restore(rel)
        except MigrateError as exc:
            out.append((f"file {rel}", False, exc.one_line(), isinstance(exc, EnvironmentMissing)))
            continue
        out.append((f"file {rel}", "missing" not in result, result))
    return out
